// Running independent pieces of work on several threads (page copies, checksums).
#pragma once

#include <algorithm>
#include <atomic>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "ckpt/base/result.h"

namespace ckpt::engine {

// Calls work(i) for every i in [0, n) on up to max_threads threads (the caller's among
// them); returns the first error any call returned, after all threads stopped.
template <typename Work>
Result<void> parallel_for(size_t n, unsigned max_threads, Work&& work) {
    unsigned threads = std::max(1u, std::min({std::thread::hardware_concurrency(), max_threads,
                                              static_cast<unsigned>(std::min<size_t>(n, 64))}));
    std::atomic<size_t> next{0};
    std::atomic<bool> failed{false};
    std::optional<Error> first;
    std::mutex mu;
    auto run = [&] {
        for (size_t i; !failed && (i = next++) < n;) {
            Result<void> r = work(i);
            if (!r) {
                std::lock_guard lock(mu);
                if (!first) first = std::move(r).error();
                failed = true;
            }
        }
    };
    std::vector<std::thread> pool;
    for (unsigned t = 1; t < threads; ++t) pool.emplace_back(run);
    run();
    for (auto& t : pool) t.join();
    if (first) return std::move(*first);
    return ok();
}

}  // namespace ckpt::engine
