// Controlling threads through ptrace: seizing and interrupting them, and making a stopped
// thread perform system calls on the engine's behalf (syscall injection).
//
// Injection runs one syscall instruction placed in the target (a trap code site): the
// thread's registers are pointed at it, the thread runs until the breakpoint after the
// instruction, and its registers are then put back. Signals are blocked meanwhile, so no
// handler of the target runs under our feet.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <string>

#include "ckpt/arch/arch.h"
#include "ckpt/base/result.h"

namespace ckpt::engine {

// PTRACE_SEIZE + PTRACE_INTERRUPT, waiting until the thread is in a ptrace stop.
// A signal that arrives first is delivered (the handler runs) and the interrupt repeated.
// Returns the signal of the stop: SIGTRAP when the interrupt stopped it, the stop signal
// (SIGSTOP, SIGTSTP...) when it is in a group stop.
// A thread that does not stop within timeout_ms (one the kernel holds in a wait no signal
// ends: a vfork parent until its child calls exec, a process stuck in uninterruptible I/O)
// fails with ETIMEDOUT naming its state and where it waits; it stays seized, stopping once
// the wait ends, until the engine detaches or exits.
Result<int> seize_and_stop(pid_t tid, int timeout_ms);
// PTRACE_SEIZE, and PTRACE_SETOPTIONS of a thread in a ptrace stop, with the options given
// and PTRACE_O_SUSPEND_SECCOMP added where the engine may (CAP_SYS_ADMIN, and no filter of its
// own): the calls it injects then pass no seccomp filter of the thread's, which could fail,
// fake or kill them. Without that right the options are set alone and the filters apply (a
// restore then installs them after every call but the trampoline's munmap). Threads and
// processes traced from birth inherit the option. seize() leaves errno as PTRACE_SEIZE did.
bool seize(pid_t tid, unsigned options);
Result<void> set_trace_options(pid_t tid, unsigned options);
// Lets a seized thread that reported SIGTRAP pass through signal delivery once more and
// stops it again: a group stop begun meanwhile by another thread is then reported (its
// signal is returned), else SIGTRAP.
Result<int> restop(pid_t tid);
// The stop a traced thread is in is a group stop (not a signal to deliver): for a thread
// seized, PTRACE_EVENT_STOP; for one traced otherwise, a stop without siginfo.
bool is_group_stop(pid_t tid, int status);
// Waits for the next stop of a traced thread; returns the wait status.
Result<int> wait_stopped(pid_t tid);

// A thread that can execute injected system calls. The caller owns the ptrace attachment.
class RemoteThread {
public:
    // code_addr: where syscall_trap_code() is in the target's memory.
    static Result<RemoteThread> attach(pid_t tid, uint64_t code_addr);
    pid_t tid() const { return tid_; }
    uint64_t code_addr() const { return code_addr_; }
    void set_code_addr(uint64_t a) { code_addr_ = a; }

    // Performs syscall nr in the thread; returns its raw result (negative errno on failure).
    Result<int64_t> syscall(long nr, std::array<uint64_t, 6> args = {});
    // As syscall(), but a negative result is an error naming the call.
    Result<int64_t> syscall_ok(const char* name, long nr, std::array<uint64_t, 6> args = {});

    // Runs count entries of a table of system calls (arch::SyscallBatchEntry) already in the
    // thread's memory at table_addr, with arch::syscall_batch_code() at batch_code_addr:
    // one resumption of the thread for all of them. Each entry's result is in the table
    // afterwards (syscall_batch.h reads them and names a failed call).
    Result<void> run_batch(uint64_t batch_code_addr, uint64_t table_addr, uint64_t count);

    // Injected system calls performed so far, and the ptrace round trips they took.
    uint64_t injected_calls() const { return injected_calls_; }
    uint64_t injected_runs() const { return injected_runs_; }

    // Performs a syscall that removes the trap code itself (munmap of the trampoline):
    // the thread then faults on the breakpoint's address, which is the expected end.
    Result<void> syscall_removing_code(long nr, std::array<uint64_t, 6> args);

    // Makes the thread enter a group stop with sig (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU), as
    // if that signal had been delivered with its default action; the thread must be in the
    // stop after an injected syscall. Fails, naming the status, if the kernel did not stop
    // it (SIGTSTP to an orphaned process group is discarded).
    Result<void> enter_group_stop(int sig);

    // SIGSTOPs that were pending and that injected syscalls took out of the way: a SIGSTOP
    // cannot be blocked, so it is delivered when the thread resumes. The caller puts them
    // back (jobctl.cpp).
    int held_stops() const { return held_stops_; }

    // Puts back the registers and signal mask the thread had when attached.
    Result<void> restore_state();
    // Keeps sig blocked from now on while code is injected (a restore queues it pending).
    Result<void> block_during_injection(int sig);
    const arch::ThreadState& saved_state() const { return saved_; }
    uint64_t saved_sigmask() const { return saved_sigmask_; }
    // The pid (as the engine sees it) of the process or thread the last injected
    // fork/clone created; 0 if none.
    pid_t last_child() const { return last_child_; }

private:
    // Resumes the thread with st until it traps (the end of the injected code): syscall nr,
    // or a batch of that many calls (named so in errors). Returns the thread's general registers
    // then (arch::read_general_state).
    Result<arch::ThreadState> run_to_trap(const arch::ThreadState& st, long nr, uint64_t batch);

    pid_t tid_ = 0;
    uint64_t code_addr_ = 0;
    uint64_t injected_calls_ = 0;
    uint64_t injected_runs_ = 0;
    arch::ThreadState saved_;
    uint64_t saved_sigmask_ = 0;
    // The mask while code is injected: everything blocked but SIGTRAP, which the injected
    // code's breakpoint raises. A forced signal (a breakpoint's, a fault's) that is blocked
    // or ignored has its action reset to the default by the kernel: the process's own
    // SIGTRAP handler would be lost. (A thread with a SIGTRAP pending is refused.)
    uint64_t inject_mask_ = ~0ull;
    pid_t last_child_ = 0;
    int held_stops_ = 0;
};

// Temporarily places the trap code at addr (an executable page of a frozen process) and
// the batch code (arch::syscall_batch_code, for SyscallBatch) at batch_addr(), restoring
// the original bytes when destroyed.
class TrapCodeSite {
public:
    static constexpr uint64_t kBatchOffset = 16;
    static constexpr size_t kWords = 12;  // the trap code, then the batch code, in 8-byte words

    static Result<TrapCodeSite> install(pid_t pid, uint64_t addr);
    TrapCodeSite(TrapCodeSite&& o) noexcept;
    TrapCodeSite& operator=(TrapCodeSite&&) = delete;
    ~TrapCodeSite();
    uint64_t addr() const { return addr_; }
    uint64_t batch_addr() const { return addr_ + kBatchOffset; }
    Result<void> remove();

private:
    TrapCodeSite() = default;
    // Puts the first n original words back; the first error is returned, the rest still done.
    Result<void> put_back(size_t n);
    pid_t pid_ = 0;
    uint64_t addr_ = 0;
    std::array<uint64_t, kWords> original_{};
    bool installed_ = false;
};

// Memory of another process (process_vm_readv/writev; /proc/PID/mem for pages the
// process itself may not read or write).
Result<void> read_remote(pid_t pid, uint64_t addr, void* buf, size_t len);
Result<void> write_remote(pid_t pid, uint64_t addr, const void* buf, size_t len);

}  // namespace ckpt::engine
