// Scratch memory inside a process the engine drives: where the arguments and results of
// injected system calls live (a struct the kernel reads, a buffer it fills).
//
// Pieces are taken in stack order through a Scope, which gives back everything taken
// through it when it ends. Each step of a dump or restore opens its own scope, so the area
// is reused step after step while no two live pieces ever overlap; a step that asks for
// more than is left fails with an error instead of writing over another's data.
#pragma once

#include <sys/types.h>

#include <cstdint>

#include "ckpt/base/result.h"
#include "ptrace_ctl.h"

namespace ckpt::engine {

class RemoteScratch {
public:
    RemoteScratch() = default;
    // [base, base + size) in the memory of process pid (as the engine sees it).
    RemoteScratch(pid_t pid, uint64_t base, uint64_t size) : pid_(pid), base_(base), size_(size) {}
    RemoteScratch(const RemoteScratch&) = delete;
    RemoteScratch& operator=(const RemoteScratch&) = delete;
    RemoteScratch(RemoteScratch&&) = default;
    RemoteScratch& operator=(RemoteScratch&&) = default;

    class [[nodiscard]] Scope {
    public:
        ~Scope() {
            arena_.used_ = mark_;
            --arena_.open_scopes_;
        }
        Scope(const Scope&) = delete;
        Scope& operator=(const Scope&) = delete;

        // len bytes at an address aligned to align (a power of two), apart from every
        // other live piece.
        Result<uint64_t> take(uint64_t len, uint64_t align = 8) {
            if (level_ != arena_.open_scopes_)
                return error("pid {}: scratch taken through an outer scope while an inner one is open", arena_.pid_);
            if (align == 0 || (align & (align - 1)))
                return error_code(EINVAL, "pid {}: scratch alignment {} is not a power of two", arena_.pid_, align);
            uint64_t at = (arena_.base_ + arena_.used_ + align - 1) & ~(align - 1);
            uint64_t end = arena_.base_ + arena_.size_;
            if (at < arena_.base_ || at > end || len > end - at)
                return error_code(ENOSPC,
                                  "pid {}: scratch memory exhausted: {} bytes asked (aligned to {}), {} of {} in use",
                                  arena_.pid_, len, align, arena_.used_, arena_.size_);
            arena_.used_ = at + len - arena_.base_;
            return at;
        }
        // Takes room for len bytes of data and copies them into the process.
        Result<uint64_t> put(const void* data, uint64_t len, uint64_t align = 8) {
            uint64_t at = CKPT_TRY(take(len, align));
            CKPT_TRY(write_remote(arena_.pid_, at, data, len));
            return at;
        }
        template <typename T>
        Result<uint64_t> put(const T& value) {
            return put(&value, sizeof value, alignof(T));
        }

    private:
        friend class RemoteScratch;
        explicit Scope(RemoteScratch& a) : arena_(a), mark_(a.used_), level_(++a.open_scopes_) {}
        RemoteScratch& arena_;
        uint64_t mark_;
        int level_;
    };

    Scope scope() { return Scope(*this); }

    pid_t pid() const { return pid_; }
    uint64_t base() const { return base_; }
    uint64_t size() const { return size_; }
    uint64_t used() const { return used_; }

private:
    pid_t pid_ = 0;
    uint64_t base_ = 0, size_ = 0, used_ = 0;
    int open_scopes_ = 0;
};

}  // namespace ckpt::engine
