// Splitting a kernel's work over XLA's intra-op thread pool.
//
// ParallelChunks(pool, n, body) runs body(c) for every chunk c in [0, n) on the calling thread
// and on tasks scheduled on the pool. Chunks are claimed from a shared counter: a task that
// starts late (its pool thread was busy) finds none left and returns without touching `body`,
// and the caller, after running out of chunks, waits only for chunks that are being run. So
// it never waits for a task that has not started, and cannot deadlock when every pool thread
// is itself inside such a call. Chunks must write disjoint memory.

#ifndef BRAINSIM_PARALLEL_H_
#define BRAINSIM_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace brainsim {

template <typename Body>
void ParallelChunks(xla::ffi::ThreadPool& pool, int64_t n_chunks, const Body& body) {
  if (n_chunks <= 0) return;
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    int64_t n = 0;
    const Body* body = nullptr;
  };
  // Shared with the tasks: a late task may still read the counter after this call returned.
  auto state = std::make_shared<State>();
  state->n = n_chunks;
  state->body = &body;
  auto work = [](State& s) {
    for (int64_t c = s.next.fetch_add(1); c < s.n; c = s.next.fetch_add(1)) {
      (*s.body)(c);
      s.done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n_chunks - 1);
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([state, work] { work(*state); });
  work(*state);
  while (state->done.load(std::memory_order_acquire) < n_chunks) std::this_thread::yield();
}

}  // namespace brainsim

#endif  // BRAINSIM_PARALLEL_H_
