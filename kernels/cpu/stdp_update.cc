// Trace-based STDP update of the synapses of neurons that spiked, on ELL storage, in place.
//
// Weights w are stored by presynaptic neuron: w[i * fan_out + s] is synapse s of neuron i, its
// target targets[i, s] (n_post = padding). Every trace-based STDP event has the form
//
//   w <- clip(w + sign * (a_e * f(w)) * b_p, w_min, w_max)
//
// where e is the neuron that spiked (its amplitude a_e, one value or one per neuron), p the
// partner on the other side of the synapse (its trace b_p) and sign = +1 for potentiation,
// -1 for depression. Two modes:
//
//   rows    (presynaptic spike e = i): the synapses s of row i, partner p = targets[i, s];
//   columns (postsynaptic spike e = j): the slots q = post_slots[j, r] < n_pre * fan_out
//            (the transposed index), partner p = q / fan_out.
//
// f is the weight dependence on w_hat = clip((w - w_min) / (w_max - w_min), 0, 1):
//   0 additive        f = 1
//   1 multiplicative  f = 1 - w_hat (potentiation), w_hat (depression)
//   2 power (Gutig)   f = (1 - w_hat)^mu (potentiation), w_hat^mu (depression)
// The expression is evaluated in the order written, like the jnp reference
// (brainsim.kernels._stdp.trace_step), so the two agree to rounding of pow.
//
// Work is one scan of the spike vector (spike_scan.h) plus the synapses of the neurons that
// spiked; weights are updated where they lie (the output aliases the input). Every synapse
// appears once per row and once per column, so no write collides.
//
// Batching: every argument carries a leading batch axis of 1 (shared) or B; the weights have B.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "parallel.h"
#include "spike_scan.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct StdpShape {
  int64_t n_pre, fan_out, n_post, index_width, n_event, n_partner, batch;
  bool columns, potentiate;
  int64_t dependence;
};

// f(w) for dependence kind D (0 additive, 1 multiplicative, 2 power) on the potentiation
// (P) or depression side. Template arguments keep the per-synapse loop free of branches.
template <typename T, int D, bool P>
inline T Factor(T w, T w_min, T w_max, T mu) {
  if (D == 0) return T(1);
  T hat = (w - w_min) / (w_max - w_min);
  hat = hat < T(0) ? T(0) : (hat > T(1) ? T(1) : hat);
  const T base = P ? T(1) - hat : hat;
  return D == 1 ? base : std::pow(base, mu);
}

template <typename T, int D, bool P>
inline T Step(T w, T amplitude, T partner, T w_min, T w_max, T mu) {
  const T change = (amplitude * Factor<T, D, P>(w, w_min, w_max, mu)) * partner;
  T out = P ? w + change : w - change;
  // jnp.clip: max with the lower bound, then min with the upper one.
  out = out < w_min ? w_min : out;
  return out > w_max ? w_max : out;
}

// Copies of an argument along the batch axis: 1 (shared) or the batch size.
inline int64_t Copies(int64_t total, int64_t base) { return base == 0 ? 1 : total / base; }

// q / d for 0 <= q < 2**31 without an integer division (tens of cycles each, which made the
// column update several times slower): a double-precision estimate, corrected by one.
struct Divider {
  int64_t d;
  double inverse;
  explicit Divider(int64_t divisor) : d(divisor), inverse(1.0 / double(divisor)) {}
  inline int64_t operator()(int64_t q) const {
    int64_t r = int64_t(double(q) * inverse);
    if (r * d > q) --r;
    else if ((r + 1) * d <= q) ++r;
    return r;
  }
};

// Prefetch for writing, into all cache levels. (Without temporal locality, for the column
// update's lines that are used once, made the 40k STDP benchmark slower.)
inline void Prefetch(const void* p) { __builtin_prefetch(p, 1, 3); }

// Synapses per chunk of work handed to a thread: large enough that scheduling (~1 us) is
// small beside it, small enough that two threads share ~70 columns of ~100 synapses evenly.
constexpr int64_t kSynapsesPerChunk = 1024;

template <typename T, int D, bool P, bool Columns>
void UpdateOne(ffi::ThreadPool& pool, const StdpShape& sh, const int32_t* idx, const T* s,
               const T* a, bool shared_amplitude, const T* tr, T w_min, T w_max, T mu, T* w) {
  const int64_t n_syn = sh.n_pre * sh.fan_out;
  const int64_t width = sh.index_width;
  const Divider pre_of(sh.fan_out);
  // The neurons that spiked, then their synapses, a chunk of neurons per thread (rows and
  // columns of different neurons never share a synapse). The synapses of one neuron lie far
  // apart (a column: one per row) or in one row far from the last: nearly every access misses
  // the cache, so the next neuron's synapses are prefetched while this one's are updated (the
  // misses overlap instead of waiting one after another: ~1.5x faster on the development
  // CPU). Prefetches never fault, so padding slots need no check here.
  std::vector<int32_t> events;
  brainsim::ForEachSpike(s, sh.n_event, [&](int64_t e) { events.push_back(int32_t(e)); });
  const int64_t n = int64_t(events.size());
  const int32_t* event = events.data();
  constexpr int64_t kLine = 64;
  auto update = [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      if (k + 1 < k1) {
        const int32_t* next = idx + event[k + 1] * width;
        if (Columns) {
          for (int64_t r = 0; r < width; ++r) Prefetch(w + next[r]);
        } else {
          T* next_w = w + event[k + 1] * sh.fan_out;
          for (int64_t r = 0; r < sh.fan_out; r += kLine / sizeof(T)) Prefetch(next_w + r);
          for (int64_t r = 0; r < width; r += kLine / sizeof(int32_t)) Prefetch(next + r);
        }
      }
      const int64_t e = event[k];
      const T amp = shared_amplitude ? a[0] : a[e];
      const int32_t* row = idx + e * width;
      if (Columns) {
        for (int64_t r = 0; r < width; ++r) {
          const int64_t q = row[r];
          if (q < 0 || q >= n_syn) continue;  // padding (== n_syn); never touch out of range
          w[q] = Step<T, D, P>(w[q], amp, tr[pre_of(q)], w_min, w_max, mu);
        }
      } else {
        T* wr = w + e * sh.fan_out;
        for (int64_t r = 0; r < width; ++r) {
          const int64_t t = row[r];
          if (t < 0 || t >= sh.n_post) continue;  // padding (== n_post)
          wr[r] = Step<T, D, P>(wr[r], amp, tr[t], w_min, w_max, mu);
        }
      }
    }
  };
  const int64_t per_chunk = std::max<int64_t>(1, kSynapsesPerChunk / std::max<int64_t>(width, 1));
  const int64_t n_chunks = (n + per_chunk - 1) / per_chunk;
  if (n_chunks <= 1) return update(0, n);
  brainsim::ParallelChunks(pool, n_chunks, [&](int64_t c) {
    update(c * per_chunk, std::min(n, (c + 1) * per_chunk));
  });
}

template <typename T, int D, bool P>
void UpdateSide(ffi::ThreadPool& pool, const StdpShape& sh, const int32_t* idx, const T* s,
                const T* a, bool shared_amplitude, const T* tr, T w_min, T w_max, T mu, T* w) {
  if (sh.columns)
    UpdateOne<T, D, P, true>(pool, sh, idx, s, a, shared_amplitude, tr, w_min, w_max, mu, w);
  else
    UpdateOne<T, D, P, false>(pool, sh, idx, s, a, shared_amplitude, tr, w_min, w_max, mu, w);
}

template <typename T, int D>
void UpdateKind(ffi::ThreadPool& pool, const StdpShape& sh, const int32_t* idx, const T* s,
                const T* a, bool shared_amplitude, const T* tr, T w_min, T w_max, T mu, T* w) {
  if (sh.potentiate)
    UpdateSide<T, D, true>(pool, sh, idx, s, a, shared_amplitude, tr, w_min, w_max, mu, w);
  else
    UpdateSide<T, D, false>(pool, sh, idx, s, a, shared_amplitude, tr, w_min, w_max, mu, w);
}

template <typename T>
void Update(ffi::ThreadPool& pool, const StdpShape& sh, const int32_t* index, int64_t index_copies, const T* spikes,
            int64_t spike_copies, const T* amplitude, int64_t amplitude_base,
            int64_t amplitude_copies, const T* partner, int64_t partner_copies,
            const T* params, int64_t param_copies, T* weights) {
  const int64_t n_syn = sh.n_pre * sh.fan_out;
  const int64_t index_size = sh.n_event * sh.index_width;
  for (int64_t b = 0; b < sh.batch; ++b) {
    const int32_t* idx = index + (index_copies == 1 ? 0 : b * index_size);
    const T* s = spikes + (spike_copies == 1 ? 0 : b * sh.n_event);
    const T* a = amplitude + (amplitude_copies == 1 ? 0 : b * amplitude_base);
    const T* tr = partner + (partner_copies == 1 ? 0 : b * sh.n_partner);
    const T* pr = params + (param_copies == 1 ? 0 : b * 3);
    T* w = weights + b * n_syn;
    const bool shared = amplitude_base == 1;
    if (sh.dependence == 0)
      UpdateKind<T, 0>(pool, sh, idx, s, a, shared, tr, pr[0], pr[1], pr[2], w);
    else if (sh.dependence == 1)
      UpdateKind<T, 1>(pool, sh, idx, s, a, shared, tr, pr[0], pr[1], pr[2], w);
    else
      UpdateKind<T, 2>(pool, sh, idx, s, a, shared, tr, pr[0], pr[1], pr[2], w);
  }
}

ffi::Error StdpUpdateImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::S32> index, ffi::AnyBuffer spikes,
                          ffi::AnyBuffer amplitude, ffi::AnyBuffer partner, ffi::AnyBuffer params,
                          ffi::AnyBuffer weights, ffi::Result<ffi::AnyBuffer> weights_out,
                          int64_t n_pre, int64_t fan_out, int64_t n_post, int64_t index_width,
                          int64_t columns, int64_t dependence, int64_t potentiate,
                          int64_t amplitude_base) {
  const auto dtype = weights.element_type();
  for (auto t : {spikes.element_type(), amplitude.element_type(), partner.element_type(),
                 params.element_type()})
    if (t != dtype)
      return ffi::Error::InvalidArgument("stdp_update: all float arguments must share one dtype");
  if (weights.untyped_data() != weights_out->untyped_data())  // aliased by the caller; in case
    std::memcpy(weights_out->untyped_data(), weights.untyped_data(), weights.size_bytes());
  if (dependence < 0 || dependence > 2)
    return ffi::Error::InvalidArgument("stdp_update: unknown weight dependence");
  StdpShape sh;
  sh.n_pre = n_pre;
  sh.fan_out = fan_out;
  sh.n_post = n_post;
  sh.index_width = index_width;
  sh.columns = columns != 0;
  sh.potentiate = potentiate != 0;
  sh.dependence = dependence;
  sh.n_event = sh.columns ? n_post : n_pre;
  sh.n_partner = sh.columns ? n_pre : n_post;
  sh.batch = Copies(weights.element_count(), n_pre * fan_out);
  const int64_t index_copies = Copies(index.element_count(), sh.n_event * index_width);
  const int64_t spike_copies = Copies(spikes.element_count(), sh.n_event);
  const int64_t amplitude_copies = Copies(amplitude.element_count(), amplitude_base);
  const int64_t partner_copies = Copies(partner.element_count(), sh.n_partner);
  const int64_t param_copies = Copies(params.element_count(), 3);
  for (int64_t copies :
       {index_copies, spike_copies, amplitude_copies, partner_copies, param_copies})
    if (copies != 1 && copies != sh.batch)
      return ffi::Error::InvalidArgument("stdp_update: batched arguments disagree on the batch size");
  if (dtype == ffi::DataType::F32) {
    Update<float>(pool, sh, index.typed_data(), index_copies, spikes.typed_data<float>(), spike_copies,
                  amplitude.typed_data<float>(), amplitude_base, amplitude_copies,
                  partner.typed_data<float>(), partner_copies, params.typed_data<float>(),
                  param_copies, weights_out->typed_data<float>());
    return ffi::Error::Success();
  }
  if (dtype == ffi::DataType::F64) {
    Update<double>(pool, sh, index.typed_data(), index_copies, spikes.typed_data<double>(),
                   spike_copies, amplitude.typed_data<double>(), amplitude_base,
                   amplitude_copies, partner.typed_data<double>(), partner_copies,
                   params.typed_data<double>(), param_copies, weights_out->typed_data<double>());
    return ffi::Error::Success();
  }
  return ffi::Error::InvalidArgument("stdp_update supports float32 and float64");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BrainsimStdpUpdate, StdpUpdateImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()        // XLA's intra-op threads
                                  .Arg<ffi::Buffer<ffi::S32>>()  // targets or post_slots
                                  .Arg<ffi::AnyBuffer>()         // spikes of the event side
                                  .Arg<ffi::AnyBuffer>()         // amplitude (1 or n_event)
                                  .Arg<ffi::AnyBuffer>()         // partner trace
                                  .Arg<ffi::AnyBuffer>()         // w_min, w_max, mu
                                  .Arg<ffi::AnyBuffer>()         // weights
                                  .Ret<ffi::AnyBuffer>()         // weights (aliased)
                                  .Attr<int64_t>("n_pre")
                                  .Attr<int64_t>("fan_out")
                                  .Attr<int64_t>("n_post")
                                  .Attr<int64_t>("index_width")
                                  .Attr<int64_t>("columns")
                                  .Attr<int64_t>("dependence")
                                  .Attr<int64_t>("potentiate")
                                  .Attr<int64_t>("amplitude_base"));
