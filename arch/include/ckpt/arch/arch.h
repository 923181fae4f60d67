// The architecture interface: everything the engine needs that differs between CPUs.
// Generic code includes only this header; arch/<isa>/ implements it and defines
// ThreadState in its own ckpt/arch/thread_state.h.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <span>

#include "ckpt/arch/thread_state.h"
#include "ckpt/base/result.h"

namespace ckpt::image {
class ThreadCore;
}

namespace ckpt::arch {

// "x86_64", "aarch64", ... as recorded in the inventory.
const char* name();
// The inventory's Arch enum value for this architecture.
int image_arch();

// Registers, extended (FPU/vector) state and TLS of a ptrace-stopped thread.
Result<ThreadState> read_thread_state(pid_t tid);
Result<void> write_thread_state(pid_t tid, const ThreadState& st);
// The general registers only (no extended state: write_thread_state leaves it alone): what
// the result of an injected system call needs, without reading the whole vector state.
Result<ThreadState> read_general_state(pid_t tid);

// Between a ThreadState and its image message.
void save_thread_state(const ThreadState& st, image::ThreadCore* core);
Result<ThreadState> load_thread_state(const image::ThreadCore& core);

uint64_t instruction_pointer(const ThreadState& st);
uint64_t stack_pointer(const ThreadState& st);
uint64_t tls_base(const ThreadState& st);

// The bytes of one system call instruction followed by a breakpoint: a thread whose
// instruction pointer is at these bytes performs one system call and then traps.
std::span<const uint8_t> syscall_trap_code();

// Sets up st to perform syscall nr with args when resumed at code_addr (where
// syscall_trap_code() was placed), disabling the kernel's restart of any syscall the
// thread had been interrupted in.
void prepare_syscall(ThreadState& st, uint64_t code_addr, long nr, const std::array<uint64_t, 6>& args);
// The raw return value of the syscall a thread just performed (negative errno on failure).
int64_t syscall_return(const ThreadState& st);

// A batch of system calls run by one resumption of a thread: a table of entries in the
// thread's memory, each {nr, args[6], result} as 64-bit words (generic layout, 64 bytes).
struct SyscallBatchEntry {
    uint64_t nr;
    uint64_t args[6];
    int64_t result;  // written by the code: the raw result, negative errno on failure
};
static_assert(sizeof(SyscallBatchEntry) == 64);
// Position-independent code that performs the table's calls in order, storing each one's
// result (as syscall_return() would give it) in its entry, stops after the first that
// fails (a result in [-4095, -1]) or after the last, and then traps as syscall_trap_code()
// does. Its registers are the thread's own: prepare_syscall_batch() sets them.
std::span<const uint8_t> syscall_batch_code();
// Sets up st to run count entries of the table at table_addr when resumed at code_addr
// (where syscall_batch_code() was placed), disabling the kernel's restart of any syscall the
// thread had been interrupted in.
void prepare_syscall_batch(ThreadState& st, uint64_t code_addr, uint64_t table_addr, uint64_t count);

// A thread stopped while inside an interrupted system call: rewrites st so that, set into
// a freshly created thread, it restarts that call (or fails it with EINTR where the kernel
// cannot restart it, as with a restart block).
void prepare_restart(ThreadState& st);

// Sets the thread's stack pointer / instruction pointer (for threads created at restore).
void set_stack_pointer(ThreadState& st, uint64_t sp);
void set_instruction_pointer(ThreadState& st, uint64_t ip);

}  // namespace ckpt::arch
