// x86_64 thread state: general purpose registers (with fs_base/gs_base, the TLS bases)
// and the XSAVE area (x87, SSE, AVX, AVX-512, PKRU).
#pragma once

#include <sys/user.h>

#include <cstdint>
#include <vector>

namespace ckpt::arch {

struct ThreadState {
    user_regs_struct regs{};
    std::vector<uint8_t> xsave;  // as NT_X86_XSTATE returns it; size is the CPU's
};

}  // namespace ckpt::arch

namespace ckpt::arch {

// The kernel's struct sigaction for rt_sigaction(2) on this architecture.
struct KernelSigaction {
    uint64_t handler;
    uint64_t flags;
    uint64_t restorer;
    uint64_t mask;
};

}  // namespace ckpt::arch
