/* signals: dispositions, blocked masks and pending signals with their siginfo survive.
 *
 * State checked after restore:
 *  - every sigaction (handler, flags, mask): SIGUSR1 SA_SIGINFO|SA_RESTART|SA_ONSTACK with a
 *    mask, SIGUSR2 SA_NODEFER|SA_RESETHAND, SIGCHLD SA_NOCLDSTOP, SIGHUP ignored, handlers of
 *    SIGTRAP, SIGSEGV and SIGBUS (which injected code can reset), ...;
 *  - the blocked mask of the main thread and of a second thread (they differ);
 *  - pending process-wide signals (ShdPnd) and per-thread ones (SigPnd of each thread);
 *  - each pending signal comes out with its siginfo: sigqueue payloads (two queued instances
 *    of one real-time signal, in order), si_code, si_pid, si_uid;
 *  - the SIGUSR1 handler still runs, on the alternate stack, with the payload it was sent. */
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

static struct sigaction before[NSIG];
static int have_action[NSIG];
static char altstack[65536];
static volatile int handler_value, handler_on_altstack;
static sem_t thread_check, thread_done;
static pid_t thread_tid;
static char thread_failure[300];

static void on_usr1(int sig, siginfo_t* info, void* ctx) {
    (void)sig, (void)ctx;
    char local;
    handler_value = info->si_value.sival_int;
    handler_on_altstack = &local >= altstack && &local < altstack + sizeof altstack;
}
static void on_plain(int sig) { (void)sig; }

/* Counts members by sigismember (glibc 2.36's sigisemptyset missed real-time signals here). */
static int count_signals(const sigset_t* set) {
    int n = 0;
    for (int s = 1; s < NSIG; s++) n += sigismember(set, s) == 1;
    return n;
}

static void set_action(int sig, void* handler, int flags, int mask1, int mask2) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    if (flags & SA_SIGINFO)
        sa.sa_sigaction = handler;
    else
        sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    if (mask1) sigaddset(&sa.sa_mask, mask1);
    if (mask2) sigaddset(&sa.sa_mask, mask2);
    sigaction(sig, &sa, NULL);
}

/* A set of the given signals (count of them follow). */
static sigset_t signal_set(int count, ...) {
    sigset_t set;
    sigemptyset(&set);
    va_list ap;
    va_start(ap, count);
    for (int i = 0; i < count; i++) sigaddset(&set, va_arg(ap, int));
    va_end(ap);
    return set;
}

/* A pending-set line ("SigPnd:" or "ShdPnd:") of one thread's /proc status. */
static void pending_field(pid_t tid, const char* key, char* out, size_t size) {
    char path[96], text[8192];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
    out[0] = '\0';
    if (test_read_text(path, text, sizeof text) < 0) return;
    char* line = strstr(text, key);
    if (line) snprintf(out, size, "%.16s", line + strlen(key) + 1);
}

/* Takes one pending signal and checks its siginfo. */
static void expect_signal(int sig, int code, int value, char* failure, size_t size) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    struct timespec zero = {0, 0};
    siginfo_t info;
    memset(&info, 0, sizeof info);
    int got = sigtimedwait(&set, &info, &zero);
    char msg[300] = "";
    if (got != sig)
        snprintf(msg, sizeof msg, "signal %d is not pending any more", sig);
    else if (info.si_code != code)
        snprintf(msg, sizeof msg, "signal %d: si_code %d, expected %d", sig, info.si_code, code);
    else if (info.si_pid != getpid() || info.si_uid != getuid())
        snprintf(msg, sizeof msg, "signal %d: si_pid %d si_uid %d", sig, info.si_pid, info.si_uid);
    else if (code == SI_QUEUE && info.si_value.sival_int != value)
        snprintf(msg, sizeof msg, "signal %d: payload %d, expected %d", sig,
                 info.si_value.sival_int, value);
    if (msg[0]) {
        if (failure) {
            if (!failure[0]) snprintf(failure, size, "thread: %s", msg);
        } else
            test_fail("%s", msg);
    }
}

static void* thread_main(void* arg) {
    (void)arg;
    sigset_t mask = signal_set(6, SIGTERM, SIGUSR2, SIGRTMIN + 2, SIGRTMIN + 1, SIGUSR1, SIGWINCH);
    pthread_sigmask(SIG_SETMASK, &mask, NULL);
    thread_tid = (pid_t)syscall(SYS_gettid);
    sem_post(&thread_done);
    while (sem_wait(&thread_check) != 0) {
    }
    if (test_corrupt(6)) expect_signal(SIGRTMIN + 2, SI_QUEUE, 2001, NULL, 0);
    sigset_t now;
    pthread_sigmask(SIG_BLOCK, NULL, &now);
    if (!sigismember(&now, SIGUSR2) || sigismember(&now, SIGALRM))
        snprintf(thread_failure, sizeof thread_failure, "thread: blocked mask changed");
    expect_signal(SIGRTMIN + 2, SI_QUEUE, 2001, thread_failure, sizeof thread_failure);
    expect_signal(SIGUSR2, SI_QUEUE, 2002, thread_failure, sizeof thread_failure);
    sigset_t left;
    sigpending(&left);
    if (count_signals(&left) != 0 && !thread_failure[0])
        snprintf(thread_failure, sizeof thread_failure, "thread: unexpected signals still pending");
    sem_post(&thread_done);
    return NULL;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 8);
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    sigaltstack(&ss, NULL);

    set_action(SIGUSR1, on_usr1, SA_SIGINFO | SA_RESTART | SA_ONSTACK, SIGUSR2, SIGRTMIN + 3);
    set_action(SIGUSR2, on_plain, SA_NODEFER | SA_RESETHAND, 0, 0);
    set_action(SIGCHLD, on_plain, SA_NOCLDSTOP | SA_RESTART, SIGINT, 0);
    set_action(SIGRTMIN + 1, on_usr1, SA_SIGINFO, SIGQUIT, 0);
    set_action(SIGHUP, SIG_IGN, 0, 0, 0);
    set_action(SIGALRM, on_plain, 0, SIGRTMAX, 0);
    /* The signals the engine's own injected code raises (its breakpoint's SIGTRAP, the fault
     * that ends a restore's last call): a forced signal that is blocked resets its action. */
    set_action(SIGTRAP, on_plain, SA_RESTART, SIGINT, 0);
    set_action(SIGSEGV, on_usr1, SA_SIGINFO | SA_ONSTACK, 0, 0);
    set_action(SIGBUS, on_plain, 0, 0, 0);

    sigset_t blocked =
        signal_set(6, SIGTERM, SIGUSR1, SIGRTMIN + 1, SIGRTMIN + 2, SIGWINCH, SIGUSR2);
    sigprocmask(SIG_SETMASK, &blocked, NULL);

    sem_init(&thread_check, 0, 0);
    sem_init(&thread_done, 0, 0);
    pthread_t thread;
    pthread_create(&thread, NULL, thread_main, NULL);
    while (sem_wait(&thread_done) != 0) {
    }
    /* both threads block these, so the process-wide ones stay pending */
    sigqueue(getpid(), SIGUSR1, (union sigval){.sival_int = 77});
    sigqueue(getpid(), SIGRTMIN + 1, (union sigval){.sival_int = 1001});
    sigqueue(getpid(), SIGRTMIN + 1, (union sigval){.sival_int = 1002});
    kill(getpid(), SIGWINCH);
    pthread_sigqueue(thread, SIGRTMIN + 2, (union sigval){.sival_int = 2001});
    pthread_sigqueue(thread, SIGUSR2, (union sigval){.sival_int = 2002});

    for (int s = 1; s < NSIG; s++) have_action[s] = sigaction(s, NULL, &before[s]) == 0;
    char shd_before[40], pnd_main_before[40], pnd_thread_before[40];
    pending_field(getpid(), "ShdPnd:", shd_before, sizeof shd_before);
    pending_field(getpid(), "SigPnd:", pnd_main_before, sizeof pnd_main_before);
    pending_field(thread_tid, "SigPnd:", pnd_thread_before, sizeof pnd_thread_before);

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) set_action(SIGUSR1, on_usr1, SA_SIGINFO | SA_ONSTACK, SIGUSR2, SIGRTMIN + 3);
    if (test_corrupt(2)) set_action(SIGCHLD, on_plain, SA_NOCLDSTOP | SA_RESTART, SIGINT, SIGQUIT);
    if (test_corrupt(3)) set_action(SIGHUP, SIG_DFL, 0, 0, 0);
    if (test_corrupt(4)) {
        sigset_t winch;
        sigemptyset(&winch);
        sigaddset(&winch, SIGWINCH);
        sigprocmask(SIG_UNBLOCK, &winch, NULL); /* default action: discarded */
    }
    if (test_corrupt(5)) expect_signal(SIGRTMIN + 1, SI_QUEUE, 1001, NULL, 0);
    if (test_corrupt(7)) sigqueue(getpid(), SIGRTMIN + 1, (union sigval){.sival_int = 5});

    for (int s = 1; s < NSIG; s++) {
        struct sigaction now;
        int have = sigaction(s, NULL, &now) == 0;
        if (!have || !have_action[s]) continue;
        CHECK(now.sa_handler == before[s].sa_handler, "signal %d: handler %p, expected %p", s,
              (void*)now.sa_handler, (void*)before[s].sa_handler);
        CHECK(now.sa_flags == before[s].sa_flags, "signal %d: flags %#x, expected %#x", s,
              now.sa_flags, before[s].sa_flags);
        for (int m = 1; m < NSIG; m++)
            CHECK(sigismember(&now.sa_mask, m) == sigismember(&before[s].sa_mask, m),
                  "signal %d: signal %d %s the handler mask", s, m,
                  sigismember(&now.sa_mask, m) ? "joined" : "left");
    }
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    for (int s = 1; s < NSIG; s++)
        CHECK(sigismember(&now, s) == sigismember(&blocked, s), "main thread: signal %d is %sblocked",
              s, sigismember(&now, s) ? "" : "not ");

    char shd[40], pnd_main[40], pnd_thread[40];
    pending_field(getpid(), "ShdPnd:", shd, sizeof shd);
    pending_field(getpid(), "SigPnd:", pnd_main, sizeof pnd_main);
    pending_field(thread_tid, "SigPnd:", pnd_thread, sizeof pnd_thread);
    if (test_proc_is_ours()) { /* the host's /proc after --new-pidns has no task/<our tid> */
        CHECK(strcmp(shd, shd_before) == 0, "process-wide pending set %s, expected %s", shd,
              shd_before);
        CHECK(strcmp(pnd_main, pnd_main_before) == 0, "main thread pending set %s, expected %s",
              pnd_main, pnd_main_before);
        CHECK(strcmp(pnd_thread, pnd_thread_before) == 0,
              "second thread pending set %s, expected %s", pnd_thread, pnd_thread_before);
    }

    expect_signal(SIGRTMIN + 1, SI_QUEUE, 1001, NULL, 0);
    expect_signal(SIGRTMIN + 1, SI_QUEUE, 1002, NULL, 0);
    expect_signal(SIGWINCH, SI_USER, 0, NULL, 0);
    expect_signal(SIGUSR1, SI_QUEUE, 77, NULL, 0);
    sigset_t left;
    sigpending(&left);
    CHECK(count_signals(&left) == 0, "%d unexpected signals still pending in the main thread",
          count_signals(&left));
    sem_post(&thread_check);
    while (sem_wait(&thread_done) != 0) {
    }
    pthread_join(thread, NULL);
    if (thread_failure[0]) test_fail("%s", thread_failure);

    if (test_corrupt(8)) {
        stack_t off = {.ss_flags = SS_DISABLE};
        sigaltstack(&off, NULL);
    }
    sigqueue(getpid(), SIGUSR1, (union sigval){.sival_int = 88});
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_UNBLOCK, &usr1, NULL); /* delivered here */
    CHECK(handler_value == 88, "SIGUSR1 handler did not run with the payload (got %d)",
          handler_value);
    CHECK(handler_on_altstack, "SIGUSR1 handler did not run on the alternate stack");
    return test_finish();
}
