// Ring-buffer rows shared by brainsim's CPU kernels: a receptor's ring holds n_ring rows of
// n_post values, flattened; row r receives what arrives r steps after row 0.

#ifndef BRAINSIM_RING_ROW_H_
#define BRAINSIM_RING_ROW_H_

#include <algorithm>
#include <cstdint>

namespace brainsim {

// Zeroes row (step mod n_ring) of `ring`: the row a receptor has read in step `step` (a delay
// of n_ring steps lands in it again). Negative steps wrap like Python's modulo.
template <typename T>
inline void ClearRingRow(T* ring, int64_t step, int64_t n_ring, int64_t n_post) {
  T* row = ring + (((step % n_ring) + n_ring) % n_ring) * n_post;
  std::fill(row, row + n_post, T(0));
}

}  // namespace brainsim

#endif  // BRAINSIM_RING_ROW_H_
