#include "syscall_batch.h"

#include <algorithm>
#include <climits>

#include "ckpt/arch/arch.h"
#include "ckpt/base/log.h"

namespace ckpt::engine {

namespace {

// In an entry the code never reached: no system call returns it.
constexpr int64_t kNotRun = INT64_MIN;

}  // namespace

void SyscallBatch::add(const char* name, long nr, std::array<uint64_t, 6> args, std::string context,
                       std::optional<uint64_t> expect) {
    static auto log = log::get("ptrace");
    log->trace("tid {}: queued syscall {}({:#x}, {:#x}, {:#x}, {:#x})", rt_.tid(), nr, args[0], args[1], args[2],
               args[3]);
    calls_.push_back({name, nr, args, std::move(context), expect});
}

Result<void> SyscallBatch::flush() {
    std::vector<Call> calls = std::move(calls_);
    calls_.clear();
    for (size_t i = 0; i < calls.size(); i += kMaxPerRun)
        CKPT_TRY(run(calls.data() + i, std::min(kMaxPerRun, calls.size() - i)));
    return ok();
}

Result<void> SyscallBatch::run(const Call* calls, size_t n) {
    if (n == 0) return ok();
    std::vector<arch::SyscallBatchEntry> table(n);
    for (size_t i = 0; i < n; ++i) {
        table[i].nr = static_cast<uint64_t>(calls[i].nr);
        std::copy(calls[i].args.begin(), calls[i].args.end(), table[i].args);
        table[i].result = kNotRun;
    }
    auto s = scratch_.scope();
    const uint64_t bytes = n * sizeof(arch::SyscallBatchEntry);
    uint64_t at = CKPT_TRY_CTX(s.put(table.data(), bytes), "tid {}: table of {} batched syscalls", rt_.tid(), n);
    CKPT_TRY(rt_.run_batch(code_addr_, at, n));
    CKPT_TRY_CTX(read_remote(scratch_.pid(), at, table.data(), bytes), "tid {}: results of {} batched syscalls",
                 rt_.tid(), n);
    for (size_t i = 0; i < n; ++i) {
        const Call& c = calls[i];
        const int64_t r = table[i].result;
        auto named = [&](Error e) {
            if (!c.context.empty()) e.context(std::string_view(c.context));
            return e;
        };
        if (r == kNotRun)
            return named(error_code(EIO, "tid {}: batched call {} of {} ({}, syscall {}) was not run", rt_.tid(), i + 1,
                                    n, c.name, c.nr));
        if (r < 0 && r > -4096)
            return named(sys_error_code(static_cast<int>(-r),
                                        fmt::format("tid {}: {} (batched call {} of {}: syscall {}({:#x}, {:#x}, "
                                                    "{:#x}, {:#x}, {:#x}, {:#x}))",
                                                    rt_.tid(), c.name, i + 1, n, c.nr, c.args[0], c.args[1],
                                                    c.args[2], c.args[3], c.args[4], c.args[5])));
        if (c.expect && static_cast<uint64_t>(r) != *c.expect)
            return named(error("tid {}: {} returned {:#x}, not {:#x} (batched call {} of {})", rt_.tid(), c.name, r,
                               *c.expect, i + 1, n));
    }
    return ok();
}

}  // namespace ckpt::engine
