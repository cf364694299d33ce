// Event-driven delivery of spikes through a fixed-fan-out (ELL) projection, CPU kernel.
//
// For every presynaptic neuron i with a non-zero spike value s_i and every synapse k of row i
// (target t = targets[i, k] < n_post; padding has t == n_post and is skipped), add
// s_i * w[i, k] to ring[(cursor + delay[i, k]) mod D, t]. The ring holds D rows of n_post
// values, flattened. Work is proportional to n_pre (the scan for non-zero spikes) plus the
// synapses of the neurons that spiked; nothing is allocated.
//
// With clear_row = 1 the row (cursor mod D) is zeroed first: the receptor has read it this step,
// and a delay of D steps lands in it again. The arguments after `ring` are not read: they are
// results the clearing must wait for (the row's readers), as in ring_clear.cc. Fusing the clear
// into the delivery saves the separate clearing kernel (a thunk per receptor and step).
//
// Batching (vmap with "expand_dims"): every argument may carry leading batch dimensions whose
// product is either 1 (shared) or B (one per batch element); the output ring has B copies.
// Weights and delays have either one value per synapse or a single shared value.

#include <cstdint>
#include <cstring>
#include <string>

#include "ring_row.h"
#include "spike_scan.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Number of batch copies of an argument whose unbatched size is `base`.
inline int64_t Copies(int64_t total, int64_t base) { return base == 0 ? 1 : total / base; }

template <typename T>
ffi::Error Deliver(const T* spikes, int64_t spike_copies, const int32_t* targets,
                   int64_t target_copies, const T* weights, int64_t weight_base,
                   int64_t weight_copies, const int32_t* delays, int64_t delay_base,
                   int64_t delay_copies, const int32_t* cursor, int64_t cursor_copies,
                   const T* ring_in, int64_t ring_copies, T* ring_out, int64_t ring_len,
                   int64_t batch, int64_t n_pre, int64_t fan_out, int64_t n_post,
                   int64_t homogeneous_delay, bool clear_row) {
  if (ring_len % n_post != 0) return ffi::Error::InvalidArgument("ring length is not a multiple of n_post");
  const int64_t n_ring = ring_len / n_post;
  const int64_t n_syn = n_pre * fan_out;
  for (int64_t b = 0; b < batch; ++b) {
    const T* s = spikes + (spike_copies == 1 ? 0 : b * n_pre);
    const int32_t* tg = targets + (target_copies == 1 ? 0 : b * n_syn);
    const T* w = weights + (weight_copies == 1 ? 0 : b * weight_base);
    const int32_t* dl = delays + (delay_copies == 1 ? 0 : b * delay_base);
    const int64_t c = cursor[cursor_copies == 1 ? 0 : b];
    T* out = ring_out + b * ring_len;
    const T* in = ring_in + (ring_copies == 1 ? 0 : b * ring_len);
    if (out != in) std::memcpy(out, in, ring_len * sizeof(T));
    if (clear_row) brainsim::ClearRingRow(out, c, n_ring, n_post);
    const bool shared_weight = weight_base == 1;
    const bool shared_delay = homogeneous_delay > 0;
    T* row_out = out + ((c + homogeneous_delay) % n_ring) * n_post;
    const uint32_t n_post_u = static_cast<uint32_t>(n_post);
    brainsim::ForEachSpike(s, n_pre, [&](int64_t i) {
      const T si = s[i];
      const int32_t* ti = tg + i * fan_out;
      if (shared_weight && shared_delay) {
        // The common case (one weight, one delay) as a tight loop: the value is computed once
        // per row (the compiler cannot hoist w[0] itself, the ring stores might alias it), and
        // one unsigned comparison skips both padding (== n_post) and negative indices.
        const T value = si * w[0];
        for (int64_t k = 0; k < fan_out; ++k) {
          const uint32_t t = static_cast<uint32_t>(ti[k]);
          if (t < n_post_u) row_out[t] += value;
        }
        return;
      }
      for (int64_t k = 0; k < fan_out; ++k) {
        const uint32_t t = static_cast<uint32_t>(ti[k]);
        if (t >= n_post_u) continue;  // padding (== n_post) or negative: never written
        const T value = si * (shared_weight ? w[0] : w[i * fan_out + k]);
        if (shared_delay) {
          row_out[t] += value;
        } else {
          const int64_t d = dl[i * fan_out + k];
          out[((c + d) % n_ring) * n_post + t] += value;
        }
      }
    });
  }
  return ffi::Error::Success();
}

ffi::Error EllDeliverImpl(ffi::AnyBuffer spikes, ffi::Buffer<ffi::S32> targets,
                          ffi::AnyBuffer weights, ffi::Buffer<ffi::S32> delays,
                          ffi::Buffer<ffi::S32> cursor, ffi::AnyBuffer ring, ffi::RemainingArgs,
                          ffi::Result<ffi::AnyBuffer> ring_out, int64_t n_pre, int64_t fan_out,
                          int64_t n_post, int64_t homogeneous_delay, int64_t weight_base,
                          int64_t delay_base, int64_t ring_len, int64_t clear_row) {
  const auto dtype = spikes.element_type();
  if (weights.element_type() != dtype || ring.element_type() != dtype)
    return ffi::Error::InvalidArgument("spikes, weights and ring must share one dtype");
  const int64_t batch = Copies(ring_out->element_count(), ring_len);
  const int64_t ring_copies = Copies(ring.element_count(), ring_len);
  const int64_t spike_copies = Copies(spikes.element_count(), n_pre);
  const int64_t target_copies = Copies(targets.element_count(), n_pre * fan_out);
  const int64_t weight_copies = Copies(weights.element_count(), weight_base);
  const int64_t delay_copies = Copies(delays.element_count(), delay_base);
  const int64_t cursor_copies = Copies(cursor.element_count(), 1);
  for (int64_t copies :
       {ring_copies, spike_copies, target_copies, weight_copies, delay_copies, cursor_copies})
    if (copies != 1 && copies != batch)
      return ffi::Error::InvalidArgument("batched arguments disagree on the batch size");
  if (dtype == ffi::DataType::F32) {
    return Deliver<float>(spikes.typed_data<float>(), spike_copies, targets.typed_data(),
                          target_copies, weights.typed_data<float>(), weight_base, weight_copies,
                          delays.typed_data(), delay_base, delay_copies, cursor.typed_data(),
                          cursor_copies, ring.typed_data<float>(), ring_copies,
                          ring_out->typed_data<float>(), ring_len, batch, n_pre, fan_out, n_post,
                          homogeneous_delay, clear_row != 0);
  }
  if (dtype == ffi::DataType::F64) {
    return Deliver<double>(spikes.typed_data<double>(), spike_copies, targets.typed_data(),
                           target_copies, weights.typed_data<double>(), weight_base,
                           weight_copies, delays.typed_data(), delay_base, delay_copies,
                           cursor.typed_data(), cursor_copies, ring.typed_data<double>(), ring_copies,
                           ring_out->typed_data<double>(), ring_len, batch, n_pre, fan_out,
                           n_post, homogeneous_delay, clear_row != 0);
  }
  return ffi::Error::InvalidArgument("ell_deliver supports float32 and float64");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BrainsimEllDeliver, EllDeliverImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()             // spikes
                                  .Arg<ffi::Buffer<ffi::S32>>()      // targets
                                  .Arg<ffi::AnyBuffer>()             // weights
                                  .Arg<ffi::Buffer<ffi::S32>>()      // delays
                                  .Arg<ffi::Buffer<ffi::S32>>()      // cursor
                                  .Arg<ffi::AnyBuffer>()             // ring
                                  .RemainingArgs()                   // results to wait for
                                  .Ret<ffi::AnyBuffer>()             // ring (aliased)
                                  .Attr<int64_t>("n_pre")
                                  .Attr<int64_t>("fan_out")
                                  .Attr<int64_t>("n_post")
                                  .Attr<int64_t>("homogeneous_delay")
                                  .Attr<int64_t>("weight_base")
                                  .Attr<int64_t>("delay_base")
                                  .Attr<int64_t>("ring_len")
                                  .Attr<int64_t>("clear_row"));
