// Sum of every row of a (batch, n) array, CPU kernel of brainsim.kernels.fast_sum.
//
// out[b] = sum_i x[b, i]. Sixteen independent partial sums let the compiler keep them in
// vector registers (float addition is not reassociated without them), so a row of a few
// thousand values costs about one read of it. NaN and ±inf propagate as in any sum.

#include <cstdint>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

template <typename T>
T RowSum(const T* x, int64_t n) {
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
void SumRows(const T* x, T* out, int64_t batch, int64_t n) {
  for (int64_t b = 0; b < batch; ++b) out[b] = RowSum(x + b * n, n);
}

ffi::Error SumImpl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> out, int64_t n) {
  const int64_t batch = out->element_count();
  if (n < 0 || x.element_count() != batch * n)
    return ffi::Error::InvalidArgument("sum: the input is not (batch, n) for the output's batch");
  if (x.element_type() != out->element_type())
    return ffi::Error::InvalidArgument("sum: input and output dtypes differ");
  switch (x.element_type()) {
    case ffi::DataType::F32:
      SumRows(x.typed_data<float>(), out->typed_data<float>(), batch, n);
      return ffi::Error::Success();
    case ffi::DataType::F64:
      SumRows(x.typed_data<double>(), out->typed_data<double>(), batch, n);
      return ffi::Error::Success();
    default:
      return ffi::Error::InvalidArgument("sum supports float32 and float64");
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BrainsimSum, SumImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // x, (batch, n)
                                  .Ret<ffi::AnyBuffer>()  // sums, (batch,)
                                  .Attr<int64_t>("n"));
