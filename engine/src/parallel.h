// Running independent pieces of work on several threads (page copies, checksums).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
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

// Jobs run in the background on up to max_threads threads, in the order given, each one
// waited for by its key (the restore's page fills, keyed by pid, while the tracer makes the
// next processes). The destructor drops the jobs not started and waits for the running ones:
// declared after what its jobs refer to, it ends before that does.
class BackgroundJobs {
public:
    explicit BackgroundJobs(unsigned max_threads) : max_threads_(std::max(1u, max_threads)) {}
    BackgroundJobs(const BackgroundJobs&) = delete;
    BackgroundJobs& operator=(const BackgroundJobs&) = delete;
    ~BackgroundJobs() {
        {
            std::lock_guard lock(mu_);
            queue_.clear();
            stop_ = true;
        }
        wake_.notify_all();
        for (auto& t : threads_) t.join();
    }

    void submit(long key, std::function<Result<void>()> job) {
        {
            std::lock_guard lock(mu_);
            state_[key] = std::nullopt;
            queue_.emplace_back(key, std::move(job));
            if (threads_.size() < max_threads_ && idle_ == 0) threads_.emplace_back([this] { run(); });
        }
        wake_.notify_one();
    }

    // Blocks until the job of key (if one was given) has ended: its result.
    Result<void> wait(long key) {
        std::unique_lock lock(mu_);
        auto it = state_.find(key);
        if (it == state_.end()) return ok();
        done_.wait(lock, [&] { return it->second.has_value(); });
        if (!*it->second) return Error(it->second->error());
        return ok();
    }

    // The first error of a job that has ended, if any (without waiting).
    Result<void> failed() {
        std::lock_guard lock(mu_);
        if (first_) return Error(*first_);
        return ok();
    }

    // Waits for every job; then the threads end. The first error any job returned.
    Result<void> wait_all() {
        {
            std::unique_lock lock(mu_);
            done_.wait(lock, [&] { return queue_.empty() && running_ == 0; });
            stop_ = true;
        }
        wake_.notify_all();
        for (auto& t : threads_) t.join();
        threads_.clear();
        std::lock_guard lock(mu_);
        if (first_) return Error(*first_);
        return ok();
    }

private:
    void run() {
        std::unique_lock lock(mu_);
        for (;;) {
            ++idle_;
            wake_.wait(lock, [&] { return stop_ || !queue_.empty(); });
            --idle_;
            if (queue_.empty()) return;
            auto [key, job] = std::move(queue_.front());
            queue_.pop_front();
            ++running_;
            lock.unlock();
            Result<void> r = job();
            lock.lock();
            --running_;
            if (!r && !first_) first_ = r.error();
            state_[key] = std::move(r);
            done_.notify_all();
        }
    }

    const unsigned max_threads_;
    std::mutex mu_;
    std::condition_variable wake_, done_;
    std::deque<std::pair<long, std::function<Result<void>()>>> queue_;
    std::map<long, std::optional<Result<void>>> state_;
    std::optional<Error> first_;
    std::vector<std::thread> threads_;
    unsigned idle_ = 0, running_ = 0;
    bool stop_ = false;
};

}  // namespace ckpt::engine
