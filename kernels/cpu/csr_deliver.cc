// Event-driven delivery of spikes through a CSR projection (rows = presynaptic neurons), CPU.
//
// For every presynaptic neuron i with a non-zero spike value s_i and every synapse k in
// indptr[i] .. indptr[i+1]-1 (target t = indices[k]; targets outside 0..n_post-1 are skipped),
// add s_i * w[k] to ring[(cursor + delay[k]) mod D, t]. Work is proportional to n_pre (the scan
// for non-zero spikes) plus the synapses of the neurons that spiked; nothing is allocated.
//
// With clear_row = 1 the row (cursor mod D) is zeroed first, as in ell_deliver.cc; the arguments
// after `ring` are results the clearing waits for, not read.
//
// Batching (vmap with "expand_dims"): every argument may carry leading batch dimensions whose
// product is either 1 (shared) or B (one per batch element); the output ring has B copies.

#include <cstdint>
#include <cstring>

#include "ring_row.h"
#include "spike_scan.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

inline int64_t CsrCopies(int64_t total, int64_t base) { return base == 0 ? 1 : total / base; }

struct CsrShape {
  int64_t n_pre, n_syn, n_post, homogeneous_delay, weight_base, delay_base, ring_len, batch;
  bool clear_row;
};

template <typename T>
ffi::Error CsrDeliver(const CsrShape& sh, const T* spikes, int64_t spike_copies,
                      const int32_t* indptr, int64_t indptr_copies, const int32_t* indices,
                      int64_t index_copies, const T* weights, int64_t weight_copies,
                      const int32_t* delays, int64_t delay_copies, const int32_t* cursor,
                      int64_t cursor_copies, const T* ring_in, int64_t ring_copies, T* ring_out) {
  if (sh.ring_len % sh.n_post != 0)
    return ffi::Error::InvalidArgument("ring length is not a multiple of n_post");
  const int64_t n_ring = sh.ring_len / sh.n_post;
  const bool shared_weight = sh.weight_base == 1;
  const bool shared_delay = sh.homogeneous_delay > 0;
  for (int64_t b = 0; b < sh.batch; ++b) {
    const T* s = spikes + (spike_copies == 1 ? 0 : b * sh.n_pre);
    const int32_t* ptr = indptr + (indptr_copies == 1 ? 0 : b * (sh.n_pre + 1));
    const int32_t* idx = indices + (index_copies == 1 ? 0 : b * sh.n_syn);
    const T* w = weights + (weight_copies == 1 ? 0 : b * sh.weight_base);
    const int32_t* dl = delays + (delay_copies == 1 ? 0 : b * sh.delay_base);
    const int64_t c = cursor[cursor_copies == 1 ? 0 : b];
    T* out = ring_out + b * sh.ring_len;
    const T* in = ring_in + (ring_copies == 1 ? 0 : b * sh.ring_len);
    if (out != in) std::memcpy(out, in, sh.ring_len * sizeof(T));
    if (sh.clear_row) brainsim::ClearRingRow(out, c, n_ring, sh.n_post);
    T* row_out = out + ((c + sh.homogeneous_delay) % n_ring) * sh.n_post;
    brainsim::ForEachSpike(s, sh.n_pre, [&](int64_t i) {
        const T si = s[i];
        int64_t k0 = ptr[i], k1 = ptr[i + 1];
        if (k0 < 0) k0 = 0;  // corrupt offsets: never read outside the synapse arrays
        if (k1 > sh.n_syn) k1 = sh.n_syn;
        for (int64_t k = k0; k < k1; ++k) {
          const int32_t t = idx[k];
          if (t < 0 || t >= sh.n_post) continue;
          const T value = si * (shared_weight ? w[0] : w[k]);
          if (shared_delay) {
            row_out[t] += value;
          } else {
            out[((c + dl[k]) % n_ring) * sh.n_post + t] += value;
          }
        }
    });
  }
  return ffi::Error::Success();
}

ffi::Error CsrDeliverImpl(ffi::AnyBuffer spikes, ffi::Buffer<ffi::S32> indptr,
                          ffi::Buffer<ffi::S32> indices, ffi::AnyBuffer weights,
                          ffi::Buffer<ffi::S32> delays, ffi::Buffer<ffi::S32> cursor,
                          ffi::AnyBuffer ring, ffi::RemainingArgs,
                          ffi::Result<ffi::AnyBuffer> ring_out, int64_t n_pre,
                          int64_t n_synapses, int64_t n_post, int64_t homogeneous_delay,
                          int64_t weight_base, int64_t delay_base, int64_t ring_len,
                          int64_t clear_row) {
  const auto dtype = spikes.element_type();
  if (weights.element_type() != dtype || ring.element_type() != dtype)
    return ffi::Error::InvalidArgument("spikes, weights and ring must share one dtype");
  if (n_pre < 1 || n_synapses < 1 || n_post < 1)
    return ffi::Error::InvalidArgument("csr_deliver needs at least one neuron and synapse");
  CsrShape sh{n_pre,    n_synapses, n_post, homogeneous_delay, weight_base, delay_base,
              ring_len, CsrCopies(ring_out->element_count(), ring_len), clear_row != 0};
  const int64_t ring_copies = CsrCopies(ring.element_count(), ring_len);
  const int64_t spike_copies = CsrCopies(spikes.element_count(), n_pre);
  const int64_t indptr_copies = CsrCopies(indptr.element_count(), n_pre + 1);
  const int64_t index_copies = CsrCopies(indices.element_count(), n_synapses);
  const int64_t weight_copies = CsrCopies(weights.element_count(), weight_base);
  const int64_t delay_copies = CsrCopies(delays.element_count(), delay_base);
  const int64_t cursor_copies = CsrCopies(cursor.element_count(), 1);
  for (int64_t copies : {ring_copies, spike_copies, indptr_copies, index_copies, weight_copies,
                         delay_copies, cursor_copies})
    if (copies != 1 && copies != sh.batch)
      return ffi::Error::InvalidArgument("batched arguments disagree on the batch size");
  if (dtype == ffi::DataType::F32) {
    return CsrDeliver<float>(sh, spikes.typed_data<float>(), spike_copies, indptr.typed_data(),
                             indptr_copies, indices.typed_data(), index_copies,
                             weights.typed_data<float>(), weight_copies, delays.typed_data(),
                             delay_copies, cursor.typed_data(), cursor_copies,
                             ring.typed_data<float>(), ring_copies,
                             ring_out->typed_data<float>());
  }
  if (dtype == ffi::DataType::F64) {
    return CsrDeliver<double>(sh, spikes.typed_data<double>(), spike_copies, indptr.typed_data(),
                              indptr_copies, indices.typed_data(), index_copies,
                              weights.typed_data<double>(), weight_copies, delays.typed_data(),
                              delay_copies, cursor.typed_data(), cursor_copies,
                              ring.typed_data<double>(), ring_copies,
                              ring_out->typed_data<double>());
  }
  return ffi::Error::InvalidArgument("csr_deliver supports float32 and float64");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BrainsimCsrDeliver, CsrDeliverImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()         // spikes
                                  .Arg<ffi::Buffer<ffi::S32>>()  // indptr
                                  .Arg<ffi::Buffer<ffi::S32>>()  // indices
                                  .Arg<ffi::AnyBuffer>()         // weights
                                  .Arg<ffi::Buffer<ffi::S32>>()  // delays
                                  .Arg<ffi::Buffer<ffi::S32>>()  // cursor
                                  .Arg<ffi::AnyBuffer>()         // ring
                                  .RemainingArgs()               // results to wait for
                                  .Ret<ffi::AnyBuffer>()         // ring
                                  .Attr<int64_t>("n_pre")
                                  .Attr<int64_t>("n_synapses")
                                  .Attr<int64_t>("n_post")
                                  .Attr<int64_t>("homogeneous_delay")
                                  .Attr<int64_t>("weight_base")
                                  .Attr<int64_t>("delay_base")
                                  .Attr<int64_t>("ring_len")
                                  .Attr<int64_t>("clear_row"));
