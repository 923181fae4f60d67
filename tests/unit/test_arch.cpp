// The arch interface against a real stopped thread.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ckpt/arch/arch.h"
#include "core.pb.h"

using namespace ckpt;

namespace {

// A child stopped under ptrace, killed at the end.
struct TracedChild {
    pid_t pid;
    TracedChild() {
        pid = fork();
        if (pid == 0) {
            for (;;) pause();
        }
        EXPECT_EQ(ptrace(PTRACE_SEIZE, pid, 0, 0), 0);
        EXPECT_EQ(ptrace(PTRACE_INTERRUPT, pid, 0, 0), 0);
        int st;
        EXPECT_EQ(waitpid(pid, &st, __WALL), pid);
    }
    ~TracedChild() {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, __WALL);
    }
};

}  // namespace

TEST(Arch, ReadsStateOfStoppedThread) {
    TracedChild c;
    auto st = arch::read_thread_state(c.pid);
    ASSERT_TRUE(st.ok()) << st.error().message();
    EXPECT_NE(arch::instruction_pointer(*st), 0u);
    EXPECT_NE(arch::stack_pointer(*st), 0u);
    EXPECT_NE(arch::tls_base(*st), 0u);  // glibc sets up TLS in every thread
    EXPECT_GE(st->xsave.size(), 512u);   // at least the legacy FXSAVE area
}

TEST(Arch, ProtoRoundTripAndWriteBack) {
    TracedChild c;
    auto st = arch::read_thread_state(c.pid);
    ASSERT_TRUE(st.ok());
    image::ThreadCore core;
    arch::save_thread_state(*st, &core);
    auto back = arch::load_thread_state(core);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(arch::instruction_pointer(*back), arch::instruction_pointer(*st));
    EXPECT_EQ(back->xsave, st->xsave);

    // Change a callee-saved register, write, read back.
    back->regs.r12 = 0x1122334455667788ull;
    ASSERT_TRUE(arch::write_thread_state(c.pid, *back).ok());
    auto again = arch::read_thread_state(c.pid);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->regs.r12, 0x1122334455667788ull);
}

TEST(Arch, MissingThreadIsAnError) {
    auto st = arch::read_thread_state(999999);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message().find("tid 999999"), std::string::npos);
}

TEST(Arch, PrepareRestartRewindsInterruptedSyscall) {
    arch::ThreadState st;
    st.regs.orig_rax = 35;  // nanosleep
    st.regs.rax = static_cast<uint64_t>(-512);  // -ERESTARTSYS
    st.regs.rip = 0x1002;
    arch::prepare_restart(st);
    EXPECT_EQ(st.regs.rax, 35u);
    EXPECT_EQ(st.regs.rip, 0x1000u);
    EXPECT_EQ(static_cast<int64_t>(st.regs.orig_rax), -1);
}
