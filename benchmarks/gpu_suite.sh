#!/usr/bin/env bash
# Everything the project checks and measures on a GPU machine, in one call (a lent GPU is held
# for minutes, so one command does it all). Run from the repository root:
#
#     bash benchmarks/gpu_suite.sh [PART ...]   # env tests coba variants graphs kernels unrolled
#                                              # monitors microcircuit hlo cpu stdp structure
#
# Without PARTs every part runs. Logs go to $OUT (default /tmp/gpu_suite) as logs.tar.gz plus a
# summary; each part has its own time limit so one slow part cannot starve the others.
#   env       GPU, driver, jax and compiler versions
#   tests     the Pallas kernel tests, compiled on the GPU (tests/test_pallas*.py and the STDP ones)
#   coba      benchmarks/coba_bench.py on the GPU at 4k, 40k and 400k neurons (1 s biological)
#   variants  COBA 4k with scan unrolling and with XLA command buffers for the loop
#   cpu       the same COBA on this machine's CPU (JAX_PLATFORMS=cpu) for the GPU/CPU ratio
#   kernels   benchmarks/kernel_bench.py on the GPU (throughput, fraction of copy bandwidth)
#   unrolled  COBA at 4k, 40k and 400k with --unroll 10
#   graphs    COBA 4k with XLA command buffers (CUDA graphs) for the loop body and the loop
#   monitors  COBA with a SpikeList per population (every spike recorded)
#   microcircuit  the Potjans-Diesmann microcircuit at full scale
#   hlo       the optimised HLO of COBA 4k (in logs.tar.gz), to count kernels per step
#   stdp      benchmarks/stdp_bench.py on the GPU (STDP over static cost)
#   structure benchmarks/structure_bench.py on the GPU: ops, fusions, custom calls and compile
#             times of the loop body, COBA 4k against Potjans-Diesmann 0.1 (not in the default set)
set -u
OUT=${OUT:-/tmp/gpu_suite}
LOGS=$(mktemp -d)
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
PARTS=${*:-env tests coba variants graphs kernels unrolled monitors microcircuit hlo cpu stdp}
SUMMARY=$OUT/summary.txt
mkdir -p "$OUT"
: > "$SUMMARY"
# brainsim.kernels is the top-level kernels/ directory mapped by pyproject.toml: install the
# checkout (editable, offline) where brainsim is not installed yet.
$PY -c "import brainsim.kernels" 2>/dev/null ||
    $PY -m pip install -q --no-deps --no-build-isolation --no-index -e . >> "$SUMMARY" 2>&1

part() {  # part NAME LIMIT_S COMMAND...: run with a limit, keep the log, note the exit code
    local name=$1 limit=$2
    shift 2
    echo "=== $name ($(date -u +%T), limit ${limit}s): $*" | tee -a "$SUMMARY"
    timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
    local rc=$?
    echo "--- $name exit $rc" | tee -a "$SUMMARY"
    tail -n "${TAIL:-12}" "$LOGS/$name.log" >> "$SUMMARY"
}

for p in $PARTS; do
    case $p in
    env)
        part env 60 bash -c "nvidia-smi; $PY -c 'import jax, jaxlib; print(jax.__version__, \
jaxlib.__version__, jax.devices())'; c++ --version | head -1; nproc; free -g" ;;
    tests)
        TAIL=40 part tests 150 env XLA_PYTHON_CLIENT_PREALLOCATE=false $PY -m pytest -q \
            -p no:cacheprovider -n 4 -k "not native" tests/test_pallas.py \
            tests/test_pallas_formats.py tests/test_kernels_stdp.py tests/test_events.py ;;
    coba)
        part coba 150 $PY benchmarks/coba_bench.py --sizes 4000 40000 400000 --duration 1000 \
            --repeats 3 --output "$OUT/coba_gpu.md" ;;
    variants)
        for v in "unroll10 --unroll 10" "while" "while_unroll10 --unroll 10"; do
            set -- $v
            name=$1
            shift
            flags=
            case $name in while*)
                flags=--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,CONDITIONAL,WHILE ;;
            esac
            part "coba_$name" 75 env XLA_FLAGS="$flags" $PY benchmarks/coba_bench.py \
                --sizes 4000 --duration 1000 --repeats 3 "$@" --output "$LOGS/coba_$name.md"
        done ;;
    cpu)
        part cpu 150 env JAX_PLATFORMS=cpu $PY benchmarks/coba_bench.py \
            --sizes 4000 40000 400000 --duration 200 --repeats 2 --output "$OUT/coba_cpu.md" ;;
    kernels)
        # The jnp reference is left out: off the CPU it reads every synapse in every step (one
        # chunk, no host loop), a dense cost. The owner-block kernel costs O(live synapses x
        # n_post): 40k only.
        part kernels_40k 150 $PY benchmarks/kernel_bench.py --sizes 40000 \
            --probabilities 0.0002 0.0025 --rates 0.001 0.01 0.1 --repeats 3 \
            --implementations triton portable --output "$OUT/kernels_gpu_40k.md"
        part kernels_400k 150 $PY benchmarks/kernel_bench.py --sizes 400000 --dense-max-n 0 \
            --probabilities 0.0002 0.0025 --rates 0.001 0.01 0.1 --repeats 3 \
            --implementations triton --output "$OUT/kernels_gpu_400k.md" ;;
    unrolled)
        part coba_unrolled 150 $PY benchmarks/coba_bench.py --sizes 4000 40000 400000 \
            --duration 1000 --repeats 3 --unroll 10 --output "$OUT/coba_gpu_unroll10.md" ;;
    graphs)
        # CUDA graphs (XLA command buffers) for the loop body, and for the whole loop (WHILE),
        # with every sequence captured (min size 1); the thunk counts say what was captured.
        for v in "fusion FUSION,CUSTOM_CALL" "while FUSION,CUSTOM_CALL,WHILE,CONDITIONAL" \
                 "while_unroll10 FUSION,CUSTOM_CALL,WHILE,CONDITIONAL --unroll 10"; do
            set -- $v
            name=$1 types=$2
            shift 2
            dump=$LOGS/graphs_$name
            part "graphs_$name" 60 env XLA_FLAGS="--xla_gpu_enable_command_buffer=$types \
--xla_gpu_graph_min_graph_size=1 --xla_dump_to=$dump --xla_dump_hlo_module_re=.*_run.*" \
                $PY benchmarks/coba_bench.py --sizes 4000 --duration 1000 --repeats 3 "$@" \
                --output "$LOGS/coba_graphs_$name.md"
            grep -hoE "[0-9]{3}: k[A-Za-z]+" "$dump"/*thunk_sequence.txt 2>/dev/null | awk "{print \$2}" | sort | uniq -c \
                | tee -a "$SUMMARY"
        done ;;
    monitors)
        # Recording every spike (SpikeList): one chunk per step on a GPU, no host loop.
        part coba_spike_lists 120 $PY benchmarks/coba_bench.py --sizes 4000 400000 \
            --duration 1000 --repeats 3 --spike-lists --output "$OUT/coba_gpu_spike_lists.md" ;;
    microcircuit)
        # Potjans-Diesmann at full scale (77k neurons, ~300 M synapses).
        part microcircuit 420 $PY benchmarks/microcircuit_bench.py --scales 1.0 \
            --k-scales 1.0 --duration 1000 --repeats 1 --json "$OUT/microcircuit_gpu.json" ;;
    hlo)
        # The optimised HLO of COBA 4k (what runs per step): kernels per loop iteration.
        part hlo 90 env XLA_FLAGS="--xla_dump_to=$LOGS/hlo --xla_dump_hlo_as_text" \
            $PY benchmarks/coba_bench.py --sizes 4000 --duration 10 --repeats 1 \
            --output "$LOGS/coba_hlo.md" ;;
    stdp)
        part stdp 90 $PY benchmarks/stdp_bench.py --n-neurons 40000 --duration 200 \
            --repeats 5 ;;
    structure)
        part structure 240 $PY benchmarks/structure_bench.py --repeats 1 \
            --output "$OUT/structure_gpu.md" --json "$OUT/structure_gpu.json" ;;
    *) echo "unknown part $p" | tee -a "$SUMMARY" ;;
    esac
done
tar -czf "$OUT/logs.tar.gz" -C "$LOGS" .
echo "=== summary"; cat "$SUMMARY"
