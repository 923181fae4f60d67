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
