// What the library's sources share: the export and multiversioning attributes, and a parallel loop.
#pragma once
#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#define EXPORT extern "C" __attribute__((visibility("default")))
#if defined(__x86_64__)
#define HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define HOT
#endif

// fn(begin, end) over [0, count) in chunks of `chunk`, taken in turn by `threads` threads
template <class F>
void parallelFor(int count, int chunk, int threads, F fn) {
  std::atomic<int> next{0};
  auto work = [&] {
    for (int b; (b = next.fetch_add(chunk)) < count;) fn(b, std::min(count, b + chunk));
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; t++) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}
