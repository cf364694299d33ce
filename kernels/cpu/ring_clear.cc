// Clears the ring-buffer row a receptor has just read, in place, CPU kernel.
//
// ring_out = ring with row (row mod D) of n_post values set to zero, the output aliased to the
// ring. The arguments after `row` are not read: they are results the clearing must wait for
// (the readers of the row). As operands of this call they order it after those readers, so
// XLA can rewrite the loop-carried ring in place instead of copying it every step.
//
// Batching (vmap with "broadcast_all"): the ring, the output and `row` carry the same leading
// batch dimensions; batch b clears row row[b] of its own ring.

#include <cstdint>
#include <cstring>

#include "ring_row.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

template <typename T>
ffi::Error Clear(const T* ring, T* out, const int32_t* row, int64_t rows_given, int64_t batch,
                 int64_t ring_len, int64_t n_post) {
  const int64_t n_ring = ring_len / n_post;
  for (int64_t b = 0; b < batch; ++b) {
    T* o = out + b * ring_len;
    const T* in = ring + b * ring_len;
    if (o != in) std::memcpy(o, in, ring_len * sizeof(T));
    brainsim::ClearRingRow(o, row[rows_given == 1 ? 0 : b], n_ring, n_post);
  }
  return ffi::Error::Success();
}

ffi::Error RingClearImpl(ffi::AnyBuffer ring, ffi::Buffer<ffi::S32> row, ffi::RemainingArgs,
                         ffi::Result<ffi::AnyBuffer> ring_out, int64_t n_post, int64_t ring_len) {
  if (n_post <= 0 || ring_len % n_post != 0)
    return ffi::Error::InvalidArgument("ring length is not a multiple of n_post");
  const int64_t batch = ring_out->element_count() / ring_len;
  if (ring.element_count() != ring_out->element_count())
    return ffi::Error::InvalidArgument("the ring and its output differ in size");
  const int64_t rows_given = row.element_count();
  if (rows_given != 1 && rows_given != batch)
    return ffi::Error::InvalidArgument("batched arguments disagree on the batch size");
  switch (ring.element_type()) {
    case ffi::DataType::F32:
      return Clear<float>(ring.typed_data<float>(), ring_out->typed_data<float>(),
                          row.typed_data(), rows_given, batch, ring_len, n_post);
    case ffi::DataType::F64:
      return Clear<double>(ring.typed_data<double>(), ring_out->typed_data<double>(),
                           row.typed_data(), rows_given, batch, ring_len, n_post);
    default:
      return ffi::Error::InvalidArgument("ring_clear supports float32 and float64");
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BrainsimRingClear, RingClearImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()         // ring
                                  .Arg<ffi::Buffer<ffi::S32>>()  // row
                                  .RemainingArgs()               // results to wait for
                                  .Ret<ffi::AnyBuffer>()         // ring (aliased)
                                  .Attr<int64_t>("n_post")
                                  .Attr<int64_t>("ring_len"));
