// Injected system calls run as a batch: queued by the engine, written into the target's
// scratch memory as a table and performed by one resumption of the thread
// (arch::syscall_batch_code in the restore trampoline, or at the dump's trap site:
// TrapCodeSite), instead of one ptrace round trip each. Only for calls whose order and
// errors are simple: each needs nothing from the results of the ones before it, and the
// first that fails ends the batch.
//
// A failed call is reported as a single injected one is (its name, errno, the caller's
// context), plus its place in the batch, its number and its arguments; the calls queued
// after it are not run.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/base/result.h"
#include "ptrace_ctl.h"
#include "remote_scratch.h"

namespace ckpt::engine {

class SyscallBatch {
public:
    // code_addr: where arch::syscall_batch_code() is in the target's memory.
    SyscallBatch(RemoteThread& rt, RemoteScratch& scratch, uint64_t code_addr)
        : rt_(rt), scratch_(scratch), code_addr_(code_addr) {}
    SyscallBatch(const SyscallBatch&) = delete;
    SyscallBatch& operator=(const SyscallBatch&) = delete;

    // Queues syscall nr. name names it in errors ("mmap"), context (if any) is the caller's
    // ("pid 12: mapping 0x1000-0x2000"); expect, if given, is the only result accepted.
    void add(const char* name, long nr, std::array<uint64_t, 6> args, std::string context = {},
             std::optional<uint64_t> expect = std::nullopt);
    // Runs what is queued, in order; the queue is empty afterwards, whether it failed or not.
    Result<void> flush();
    size_t pending() const { return calls_.size(); }

    // Entries run by one resumption at most (64 bytes each, in the scratch memory).
    static constexpr size_t kMaxPerRun = 1024;

private:
    struct Call {
        const char* name;
        long nr;
        std::array<uint64_t, 6> args;
        std::string context;
        std::optional<uint64_t> expect;
    };
    Result<void> run(const Call* calls, size_t n);

    RemoteThread& rt_;
    RemoteScratch& scratch_;
    uint64_t code_addr_;
    std::vector<Call> calls_;
};

}  // namespace ckpt::engine
