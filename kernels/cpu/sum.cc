// Sums of consecutive segments of every row of a (batch, n) array, CPU kernel of
// brainsim.kernels.fast_sum (one segment) and segment_sums.
//
// out[b, s] = sum of x[b, i] for i in segment s, the segments of sizes sizes[0], sizes[1], ...
// laid end to end (their sizes add up to n). Sixteen independent partial sums let the compiler
// keep them in vector registers (float addition is not reassociated without them), so a row of
// a few thousand values costs about one read of it. NaN and ±inf propagate as in any sum.

#include <cstdint>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

template <typename T>
T RunSum(const T* x, int64_t n) {
  constexpr int64_t kLanes = 16;
  T partial[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) partial[j] += x[i + j];
  // The partial sums pairwise, then the tail.
  for (int64_t width = kLanes / 2; width > 0; width /= 2)
    for (int64_t j = 0; j < width; ++j) partial[j] += partial[j + width];
  T total = partial[0];
  for (; i < n; ++i) total += x[i];
  return total;
}

template <typename T>
void SumSegments(const T* x, T* out, int64_t batch, int64_t n, ffi::Span<const int64_t> sizes) {
  const int64_t segments = static_cast<int64_t>(sizes.size());
  for (int64_t b = 0; b < batch; ++b) {
    const T* row = x + b * n;
    for (int64_t s = 0; s < segments; ++s) {
      out[b * segments + s] = RunSum(row, sizes[s]);
      row += sizes[s];
    }
  }
}

ffi::Error SumImpl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> out,
                   ffi::Span<const int64_t> sizes) {
  const int64_t segments = static_cast<int64_t>(sizes.size());
  int64_t n = 0;
  for (int64_t s = 0; s < segments; ++s) {
    if (sizes[s] < 0) return ffi::Error::InvalidArgument("sum: a segment size is negative");
    n += sizes[s];
  }
  if (segments == 0 || out->element_count() % segments != 0)
    return ffi::Error::InvalidArgument("sum: the output is not (batch, segments)");
  const int64_t batch = out->element_count() / segments;
  if (x.element_count() != batch * n)
    return ffi::Error::InvalidArgument("sum: the input is not (batch, sum of the segment sizes)");
  if (x.element_type() != out->element_type())
    return ffi::Error::InvalidArgument("sum: input and output dtypes differ");
  switch (x.element_type()) {
    case ffi::DataType::F32:
      SumSegments(x.typed_data<float>(), out->typed_data<float>(), batch, n, sizes);
      return ffi::Error::Success();
    case ffi::DataType::F64:
      SumSegments(x.typed_data<double>(), out->typed_data<double>(), batch, n, sizes);
      return ffi::Error::Success();
    default:
      return ffi::Error::InvalidArgument("sum supports float32 and float64");
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BrainsimSum, SumImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // x, (batch, n)
                                  .Ret<ffi::AnyBuffer>()  // sums, (batch, segments)
                                  .Attr<ffi::Span<const int64_t>>("sizes"));
