// Event-driven delivery through procedural connectivity (synapses regenerated from a hash), CPU.
//
// The synapses of presynaptic neuron i are j = 0 .. count_i - 1, each a pure function of
// (seed, i, j) computed with uint32 arithmetic exactly as in kernels/_procedural.py (NumPy and
// jnp), so this kernel and the reference see bit-identical targets and weight variates:
//   * Threefry-2x32-20, key (seed, stream), counter (i, j);
//   * with replacement: target = mulhi(a, n_range) of the first word of stream SYNS;
//   * without replacement: target = cycle-walked 8-round Feistel permutation of j on 4^h
//     values, round keys (k0, k1, fmix(k0 + golden), fmix(k1 + golden)) from stream ROWS,
//     counter (i, 0);
//   * allow_self = 0: draws from n_post - 1 values and skips i;
//   * weight = loc (constant) or loc + scale * g, g = (b >> 8) * 2^-24 from the second word.
// For each spiking neuron (ascending) and each j (ascending), ring[(cursor + delay) mod D,
// t + post_offset] += s_i * w: the summation order of the jnp reference. The ring has rows of
// ring_width neurons; a synapse whose column t + post_offset lies outside [0, ring_width) is
// skipped (a population placed in a merged group, or the window of neurons a device owns).
//
// With clear_row = 1 the row (cursor mod D) is zeroed first, as in ell_deliver.cc; the arguments
// after `ring` are results the clearing waits for, not read.
//
// Batching (vmap with "expand_dims"): spikes, counts, loc, scale, cursor and ring may carry
// leading batch dimensions whose product is 1 (shared) or B; the output ring has B copies.

#include <cstdint>
#include <cstring>

#include "ring_row.h"
#include "spike_scan.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr uint32_t kRowStream = 0x524F5753u;      // "ROWS"
constexpr uint32_t kSynapseStream = 0x53594E53u;  // "SYNS"
constexpr uint32_t kParity = 0x1BD11BDAu;
constexpr uint32_t kGolden = 0x9E3779B9u;
constexpr int kFeistelRounds = 8;
constexpr int kRotations[8] = {13, 15, 26, 6, 17, 29, 16, 24};
inline uint32_t Rotl(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

inline void Threefry2x32(uint32_t k0, uint32_t k1, uint32_t c0, uint32_t c1, uint32_t* out0,
                         uint32_t* out1) {
  const uint32_t ks[3] = {k0, k1, k0 ^ k1 ^ kParity};
  uint32_t x0 = c0 + ks[0];
  uint32_t x1 = c1 + ks[1];
  for (int r = 0; r < 20; ++r) {
    x0 += x1;
    x1 = Rotl(x1, kRotations[r % 8]) ^ x0;
    if (r % 4 == 3) {
      const int s = r / 4 + 1;
      x0 += ks[s % 3];
      x1 += ks[(s + 1) % 3] + uint32_t(s);
    }
  }
  *out0 = x0;
  *out1 = x1;
}

inline uint32_t Fmix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  return x ^ (x >> 16);
}

inline uint32_t Feistel(uint32_t x, const uint32_t keys[4], int half_bits) {
  const uint32_t mask = (uint32_t(1) << half_bits) - 1u;
  uint32_t left = x >> half_bits, right = x & mask;
  for (int r = 0; r < kFeistelRounds; ++r) {
    const uint32_t k = keys[r % 4] + uint32_t(r) * kGolden;
    const uint32_t next = left ^ (Fmix32(right ^ k) & mask);
    left = right;
    right = next;
  }
  return (left << half_bits) | right;
}

inline uint32_t MulHi32(uint32_t a, uint32_t b) {
  return uint32_t((uint64_t(a) * uint64_t(b)) >> 32);
}

struct Rule {
  int64_t n_pre, n_post, fan_out, n_range, half_bits, seed, delay, ring_len, post_offset,
      ring_width, batch;
  bool replace, allow_self, random_weight, has_counts, clear_row;
};

inline int64_t ProcCopies(int64_t total, int64_t base) { return base == 0 ? 1 : total / base; }

template <typename T>
ffi::Error Deliver(const Rule& rule, const T* spikes, int64_t spike_copies, const int32_t* counts,
                   int64_t count_copies, const T* loc, int64_t loc_copies, const T* scale,
                   int64_t scale_copies, const int32_t* cursor, int64_t cursor_copies,
                   const T* ring_in, int64_t ring_copies, T* ring_out) {
  if (rule.ring_len % rule.ring_width != 0)
    return ffi::Error::InvalidArgument("ring length is not a multiple of ring_width");
  const int64_t n_ring = rule.ring_len / rule.ring_width;
  const uint32_t seed = uint32_t(rule.seed);
  const uint32_t n_range = uint32_t(rule.n_range);
  for (int64_t b = 0; b < rule.batch; ++b) {
    const T* s = spikes + (spike_copies == 1 ? 0 : b * rule.n_pre);
    const int32_t* cnt = counts + (count_copies == 1 ? 0 : b * rule.n_pre);
    const T w0 = loc[loc_copies == 1 ? 0 : b];
    const T w1 = scale[scale_copies == 1 ? 0 : b];
    const int64_t c = cursor[cursor_copies == 1 ? 0 : b];
    T* out = ring_out + b * rule.ring_len;
    const T* in = ring_in + (ring_copies == 1 ? 0 : b * rule.ring_len);
    if (out != in) std::memcpy(out, in, rule.ring_len * sizeof(T));
    if (rule.clear_row) brainsim::ClearRingRow(out, c, n_ring, rule.ring_width);
    T* row_out = out + ((c + rule.delay) % n_ring) * rule.ring_width;
    brainsim::ForEachSpike(s, rule.n_pre, [&](int64_t i) {
        const T si = s[i];
        const uint32_t row = uint32_t(i);
        int64_t count = rule.has_counts ? int64_t(cnt[i]) : rule.fan_out;
        if (count > rule.fan_out) count = rule.fan_out;
        uint32_t keys[4] = {0, 0, 0, 0};
        if (!rule.replace) {
          Threefry2x32(seed, kRowStream, row, 0u, &keys[0], &keys[1]);
          keys[2] = Fmix32(keys[0] + kGolden);
          keys[3] = Fmix32(keys[1] + kGolden);
        }
        for (int64_t j = 0; j < count; ++j) {
          uint32_t a = 0, word = 0, x;
          if (rule.replace || rule.random_weight)
            Threefry2x32(seed, kSynapseStream, row, uint32_t(j), &a, &word);
          if (rule.replace) {
            x = MulHi32(a, n_range);
          } else {
            x = Feistel(uint32_t(j), keys, int(rule.half_bits));
            while (x >= n_range) x = Feistel(x, keys, int(rule.half_bits));
          }
          if (!rule.allow_self && x >= row) x += 1u;
          if (x >= uint32_t(rule.n_post)) continue;  // unreachable; never write out of range
          const int64_t column = int64_t(x) + rule.post_offset;
          if (column < 0 || column >= rule.ring_width) continue;  // outside the window
          T w = w0;
          if (rule.random_weight) {
            const float g = float(word >> 8) * 0x1p-24f;
            w = w0 + w1 * T(g);
          }
          row_out[column] += si * w;
        }
    });
  }
  return ffi::Error::Success();
}

ffi::Error ProceduralDeliverImpl(ffi::AnyBuffer spikes, ffi::Buffer<ffi::S32> counts,
                                 ffi::AnyBuffer loc, ffi::AnyBuffer scale,
                                 ffi::Buffer<ffi::S32> cursor, ffi::AnyBuffer ring,
                                 ffi::RemainingArgs, ffi::Result<ffi::AnyBuffer> ring_out,
                                 int64_t n_pre,
                                 int64_t n_post, int64_t fan_out, int64_t n_range,
                                 int64_t half_bits, int64_t seed, int64_t replace,
                                 int64_t allow_self, int64_t random_weight, int64_t has_counts,
                                 int64_t delay, int64_t ring_len, int64_t clear_row,
                                 int64_t post_offset, int64_t ring_width) {
  const auto dtype = spikes.element_type();
  if (loc.element_type() != dtype || scale.element_type() != dtype ||
      ring.element_type() != dtype)
    return ffi::Error::InvalidArgument("spikes, weights and ring must share one dtype");
  if (n_pre < 1 || n_post < 1 || half_bits < 1 || half_bits > 16)
    return ffi::Error::InvalidArgument("procedural_deliver: invalid sizes");
  if (delay < 1) return ffi::Error::InvalidArgument("procedural_deliver: delay must be >= 1");
  if (ring_width < 1)
    return ffi::Error::InvalidArgument("procedural_deliver: ring_width must be >= 1");
  Rule rule{n_pre,         n_post,        fan_out,          n_range,
            half_bits,     seed,          delay,            ring_len,
            post_offset,   ring_width,
            ProcCopies(ring_out->element_count(), ring_len),
            replace != 0,  allow_self != 0, random_weight != 0, has_counts != 0,
            clear_row != 0};
  const int64_t spike_copies = ProcCopies(spikes.element_count(), n_pre);
  const int64_t count_copies = ProcCopies(counts.element_count(), has_counts ? n_pre : 1);
  const int64_t loc_copies = ProcCopies(loc.element_count(), 1);
  const int64_t scale_copies = ProcCopies(scale.element_count(), 1);
  const int64_t cursor_copies = ProcCopies(cursor.element_count(), 1);
  const int64_t ring_copies = ProcCopies(ring.element_count(), ring_len);
  for (int64_t copies :
       {spike_copies, count_copies, loc_copies, scale_copies, cursor_copies, ring_copies})
    if (copies != 1 && copies != rule.batch)
      return ffi::Error::InvalidArgument("batched arguments disagree on the batch size");
  if (dtype == ffi::DataType::F32) {
    return Deliver<float>(rule, spikes.typed_data<float>(), spike_copies, counts.typed_data(),
                          count_copies, loc.typed_data<float>(), loc_copies,
                          scale.typed_data<float>(), scale_copies, cursor.typed_data(),
                          cursor_copies, ring.typed_data<float>(), ring_copies,
                          ring_out->typed_data<float>());
  }
  if (dtype == ffi::DataType::F64) {
    return Deliver<double>(rule, spikes.typed_data<double>(), spike_copies, counts.typed_data(),
                           count_copies, loc.typed_data<double>(), loc_copies,
                           scale.typed_data<double>(), scale_copies, cursor.typed_data(),
                           cursor_copies, ring.typed_data<double>(), ring_copies,
                           ring_out->typed_data<double>());
  }
  return ffi::Error::InvalidArgument("procedural_deliver supports float32 and float64");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BrainsimProceduralDeliver, ProceduralDeliverImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()         // spikes
                                  .Arg<ffi::Buffer<ffi::S32>>()  // counts
                                  .Arg<ffi::AnyBuffer>()         // weight loc
                                  .Arg<ffi::AnyBuffer>()         // weight scale
                                  .Arg<ffi::Buffer<ffi::S32>>()  // cursor
                                  .Arg<ffi::AnyBuffer>()         // ring
                                  .RemainingArgs()               // results to wait for
                                  .Ret<ffi::AnyBuffer>()         // ring
                                  .Attr<int64_t>("n_pre")
                                  .Attr<int64_t>("n_post")
                                  .Attr<int64_t>("fan_out")
                                  .Attr<int64_t>("n_range")
                                  .Attr<int64_t>("half_bits")
                                  .Attr<int64_t>("seed")
                                  .Attr<int64_t>("replace")
                                  .Attr<int64_t>("allow_self")
                                  .Attr<int64_t>("random_weight")
                                  .Attr<int64_t>("has_counts")
                                  .Attr<int64_t>("delay")
                                  .Attr<int64_t>("ring_len")
                                  .Attr<int64_t>("clear_row")
                                  .Attr<int64_t>("post_offset")
                                  .Attr<int64_t>("ring_width"));
