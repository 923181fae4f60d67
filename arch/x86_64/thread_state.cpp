// x86_64 implementation of the arch interface.
#include <elf.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>

#include "ckpt/arch/arch.h"
#include "core.pb.h"
#include "inventory.pb.h"

namespace ckpt::arch {
namespace {

// The kernel's internal restart codes, seen in rax of a thread stopped in a syscall.
constexpr int64_t kERestartSys = 512;
constexpr int64_t kERestartNoIntr = 513;
constexpr int64_t kERestartNoHand = 514;
constexpr int64_t kERestartRestartBlock = 516;

// Largest XSAVE area we accept (AVX-512 with AMX tiles is 11008 bytes).
constexpr size_t kMaxXsave = 16384;
// Offset of xstate_bv's sibling "xcr0" in the software-reserved bytes of the legacy area.
constexpr size_t kXsaveSwXcr0Offset = 464;

}  // namespace

const char* name() { return "x86_64"; }
int image_arch() { return image::ARCH_X86_64; }

Result<ThreadState> read_thread_state(pid_t tid) {
    ThreadState st;
    iovec iov{&st.regs, sizeof st.regs};
    if (ptrace(PTRACE_GETREGSET, tid, NT_PRSTATUS, &iov) != 0)
        return sys_error("ptrace(GETREGSET, NT_PRSTATUS) tid {}", tid);
    st.xsave.resize(kMaxXsave);
    iov = {st.xsave.data(), st.xsave.size()};
    if (ptrace(PTRACE_GETREGSET, tid, NT_X86_XSTATE, &iov) != 0)
        return sys_error("ptrace(GETREGSET, NT_X86_XSTATE) tid {}", tid);
    st.xsave.resize(iov.iov_len);
    return st;
}

Result<ThreadState> read_general_state(pid_t tid) {
    ThreadState st;
    iovec iov{&st.regs, sizeof st.regs};
    if (ptrace(PTRACE_GETREGSET, tid, NT_PRSTATUS, &iov) != 0)
        return sys_error("ptrace(GETREGSET, NT_PRSTATUS) tid {}", tid);
    return st;
}

Result<void> write_thread_state(pid_t tid, const ThreadState& st) {
    iovec iov{const_cast<user_regs_struct*>(&st.regs), sizeof st.regs};
    if (ptrace(PTRACE_SETREGSET, tid, NT_PRSTATUS, &iov) != 0)
        return sys_error("ptrace(SETREGSET, NT_PRSTATUS) tid {}", tid);
    if (!st.xsave.empty()) {
        iov = {const_cast<uint8_t*>(st.xsave.data()), st.xsave.size()};
        if (ptrace(PTRACE_SETREGSET, tid, NT_X86_XSTATE, &iov) != 0)
            return sys_error("ptrace(SETREGSET, NT_X86_XSTATE) tid {} ({} bytes)", tid, st.xsave.size());
    }
    return ok();
}

void save_thread_state(const ThreadState& st, image::ThreadCore* core) {
    auto* r = core->mutable_x86_64();
    const auto& g = st.regs;
    r->set_r15(g.r15); r->set_r14(g.r14); r->set_r13(g.r13); r->set_r12(g.r12);
    r->set_rbp(g.rbp); r->set_rbx(g.rbx); r->set_r11(g.r11); r->set_r10(g.r10);
    r->set_r9(g.r9);   r->set_r8(g.r8);   r->set_rax(g.rax); r->set_rcx(g.rcx);
    r->set_rdx(g.rdx); r->set_rsi(g.rsi); r->set_rdi(g.rdi); r->set_orig_rax(g.orig_rax);
    r->set_rip(g.rip); r->set_cs(g.cs);   r->set_eflags(g.eflags); r->set_rsp(g.rsp);
    r->set_ss(g.ss);   r->set_fs_base(g.fs_base); r->set_gs_base(g.gs_base);
    r->set_ds(g.ds);   r->set_es(g.es);   r->set_fs(g.fs); r->set_gs(g.gs);
    r->set_xsave(st.xsave.data(), st.xsave.size());
    if (st.xsave.size() >= kXsaveSwXcr0Offset + 8) {
        uint64_t xcr0;
        std::memcpy(&xcr0, st.xsave.data() + kXsaveSwXcr0Offset, sizeof xcr0);
        r->set_xcr0(xcr0);
    }
}

Result<ThreadState> load_thread_state(const image::ThreadCore& core) {
    if (!core.has_x86_64()) return error_code(EINVAL, "thread {}: no x86_64 register state in image", core.tid());
    const auto& r = core.x86_64();
    ThreadState st;
    auto& g = st.regs;
    g.r15 = r.r15(); g.r14 = r.r14(); g.r13 = r.r13(); g.r12 = r.r12();
    g.rbp = r.rbp(); g.rbx = r.rbx(); g.r11 = r.r11(); g.r10 = r.r10();
    g.r9 = r.r9();   g.r8 = r.r8();   g.rax = r.rax(); g.rcx = r.rcx();
    g.rdx = r.rdx(); g.rsi = r.rsi(); g.rdi = r.rdi(); g.orig_rax = r.orig_rax();
    g.rip = r.rip(); g.cs = r.cs();   g.eflags = r.eflags(); g.rsp = r.rsp();
    g.ss = r.ss();   g.fs_base = r.fs_base(); g.gs_base = r.gs_base();
    g.ds = r.ds();   g.es = r.es();   g.fs = r.fs(); g.gs = r.gs();
    if (r.xsave().size() > kMaxXsave) return error_code(EINVAL, "thread {}: xsave area too large", core.tid());
    st.xsave.assign(r.xsave().begin(), r.xsave().end());
    return st;
}

uint64_t instruction_pointer(const ThreadState& st) { return st.regs.rip; }
uint64_t stack_pointer(const ThreadState& st) { return st.regs.rsp; }
uint64_t tls_base(const ThreadState& st) { return st.regs.fs_base; }
void set_stack_pointer(ThreadState& st, uint64_t sp) { st.regs.rsp = sp; }
void set_instruction_pointer(ThreadState& st, uint64_t ip) { st.regs.rip = ip; }

std::span<const uint8_t> syscall_trap_code() {
    static const uint8_t code[] = {0x0f, 0x05, 0xcc};  // syscall; int3
    return code;
}

void prepare_syscall(ThreadState& st, uint64_t code_addr, long nr, const std::array<uint64_t, 6>& a) {
    auto& g = st.regs;
    g.rip = code_addr;
    g.rax = static_cast<uint64_t>(nr);
    g.orig_rax = static_cast<uint64_t>(-1);  // no syscall restart on resume
    g.rdi = a[0]; g.rsi = a[1]; g.rdx = a[2]; g.r10 = a[3]; g.r8 = a[4]; g.r9 = a[5];
}

int64_t syscall_return(const ThreadState& st) { return static_cast<int64_t>(st.regs.rax); }

std::span<const uint8_t> syscall_batch_code() {
    // r12: the entry, r13: entries left (both callee-saved: the syscall instruction
    // clobbers only rax, rcx and r11).
    static const uint8_t code[] = {
        0x4d, 0x85, 0xed,                    // loop: test r13, r13
        0x74, 0x3a,                          //       je done
        0x49, 0x8b, 0x04, 0x24,              //       mov rax, [r12]
        0x49, 0x8b, 0x7c, 0x24, 0x08,        //       mov rdi, [r12+8]
        0x49, 0x8b, 0x74, 0x24, 0x10,        //       mov rsi, [r12+16]
        0x49, 0x8b, 0x54, 0x24, 0x18,        //       mov rdx, [r12+24]
        0x4d, 0x8b, 0x54, 0x24, 0x20,        //       mov r10, [r12+32]
        0x4d, 0x8b, 0x44, 0x24, 0x28,        //       mov r8, [r12+40]
        0x4d, 0x8b, 0x4c, 0x24, 0x30,        //       mov r9, [r12+48]
        0x0f, 0x05,                          //       syscall
        0x49, 0x89, 0x44, 0x24, 0x38,        //       mov [r12+56], rax
        0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff,  //       cmp rax, -4095
        0x73, 0x09,                          //       jae done
        0x49, 0x83, 0xc4, 0x40,              //       add r12, 64
        0x49, 0xff, 0xcd,                    //       dec r13
        0xeb, 0xc1,                          //       jmp loop
        0xcc,                                // done: int3
    };
    return code;
}

void prepare_syscall_batch(ThreadState& st, uint64_t code_addr, uint64_t table_addr, uint64_t count) {
    auto& g = st.regs;
    g.rip = code_addr;
    g.orig_rax = static_cast<uint64_t>(-1);  // no syscall restart on resume
    g.r12 = table_addr;
    g.r13 = count;
}

void prepare_restart(ThreadState& st) {
    auto& g = st.regs;
    if (static_cast<int64_t>(g.orig_rax) >= 0) {
        switch (-static_cast<int64_t>(g.rax)) {
            case kERestartSys:
            case kERestartNoIntr:
            case kERestartNoHand:
                g.rax = g.orig_rax;
                g.rip -= 2;  // length of the syscall instruction
                break;
            case kERestartRestartBlock:
                // The kernel's restart block does not survive; the call sees EINTR.
                g.rax = static_cast<uint64_t>(-EINTR);
                break;
            default:
                break;
        }
    }
    g.orig_rax = static_cast<uint64_t>(-1);
}

}  // namespace ckpt::arch
