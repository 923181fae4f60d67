/* seccomp_filters: seccomp filters that would fail, fake or kill the system calls a dump and a
 * restore inject (run as root, without no_new_privs: a root restore installs the filters
 * before it sets the identity, so every call of that comes after them).
 *
 *   main thread + one thread, both under two filters installed with SECCOMP_FILTER_FLAG_TSYNC:
 *     first:  getppid fails with ENOTBLK; any prctl kills the process (SECCOMP_RET_KILL_PROCESS)
 *     second: setresuid, setresgid, setgroups and capset "succeed" without doing anything
 *
 * The dump reads state with injected prctl calls and the restore sets the identity with
 * setgroups, setresuid... and prctl: unless the filters are suspended for them
 * (PTRACE_O_SUSPEND_SECCOMP), a dump kills the process and a restore is killed or faked.
 *
 * State checked after restore, in each thread: Seccomp 2 with 2 filters in its status;
 * getppid fails with ENOTBLK; setgroups(0, NULL) reports success and the groups (7 and 8) are
 * still there. In a child forked after restore (it inherits the filters): a prctl kills it
 * with SIGSYS.
 *
 * With CKPT_TEST_THREAD_FILTER=1 (the negative test seccomp-thread), the thread then adds a
 * filter of its own (allowing everything), which a dump must refuse: a restore installs one
 * set of filters for every thread. Its checks then expect 3 filters in the thread. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

static int install(struct sock_filter* code, unsigned short n) {
    struct sock_fprog prog = {.len = n, .filter = code};
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
}

#define LOAD_ARCH_OR_ALLOW                                                                  \
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),                \
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),                       \
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),                                       \
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))

static int install_killing(void) {
    struct sock_filter code[] = {
        LOAD_ARCH_OR_ALLOW,
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOTBLK),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_prctl, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    return install(code, sizeof code / sizeof code[0]);
}

static int install_faking(void) {
    struct sock_filter code[] = {
        LOAD_ARCH_OR_ALLOW,
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_setresuid, 4, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_setresgid, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_setgroups, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_capset, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 0), /* "success", nothing done */
    };
    return install(code, sizeof code / sizeof code[0]);
}

static int go[2], done[2], own[2], owned[2];
static int thread_filters = 2;

/* The checks every thread makes; failures through test_fail (thread-safe enough: one line). */
static void check_filters(const char* who) {
    /* thread-self: in a new pid namespace the tid is not the one /proc knows */
    const char* path = "/proc/thread-self/status";
    char text[8192];
    CHECK(test_read_text(path, text, sizeof text) > 0, "%s: %s unreadable", who, path);
    const char* mode = strstr(text, "\nSeccomp:");
    const char* filters = strstr(text, "\nSeccomp_filters:");
    int m = -1, f = -1;
    if (mode) sscanf(mode, "\nSeccomp: %d", &m);
    if (filters) sscanf(filters, "\nSeccomp_filters: %d", &f);
    int want = strcmp(who, "thread") == 0 ? thread_filters : 2;
    CHECK(m == 2 && f == want, "%s: seccomp mode %d with %d filters, expected 2 with %d", who, m, f, want);
    errno = 0;
    long ppid = syscall(SYS_getppid);
    CHECK(ppid == -1 && errno == ENOTBLK, "%s: getppid gave %ld (%s), the filter would fail it", who, ppid,
          strerror(errno));
    CHECK(syscall(SYS_setgroups, 0, NULL) == 0, "%s: setgroups failed: %s", who, strerror(errno));
    gid_t groups[8];
    int n = getgroups(8, groups);
    CHECK(n == 2 && groups[0] == 7 && groups[1] == 8, "%s: %d groups after a faked setgroups, expected 7 and 8", who, n);
}

static void* thread_main(void* arg) {
    (void)arg;
    char c;
    if (thread_filters == 3) {
        if (read(own[0], &c, 1) != 1) test_fail("thread: read: %s", strerror(errno));
        struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
        struct sock_fprog prog = {.len = 1, .filter = allow};
        CHECK(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0, "thread: seccomp: %s", strerror(errno));
        if (write(owned[1], "o", 1) != 1) test_fail("thread: write: %s", strerror(errno));
    }
    if (read(go[0], &c, 1) != 1) test_fail("thread: read: %s", strerror(errno));
    check_filters("thread");
    if (write(done[1], "d", 1) != 1) test_fail("thread: write: %s", strerror(errno));
    return NULL;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 3);
    CHECK(geteuid() == 0, "seccomp_filters runs as root (its filters are installed without no_new_privs)");
    gid_t groups[2] = {7, 8};
    CHECK(setgroups(2, groups) == 0, "setgroups: %s", strerror(errno));
    if (pipe(go) != 0 || pipe(done) != 0 || pipe(own) != 0 || pipe(owned) != 0) test_fail("pipe: %s", strerror(errno));
    const char* own_filter = getenv("CKPT_TEST_THREAD_FILTER");
    if (own_filter && strcmp(own_filter, "1") == 0) thread_filters = 3;
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, thread_main, NULL) == 0, "pthread_create failed");
    CHECK(install_killing() == 0, "seccomp (killing prctl): %s", strerror(errno));
    CHECK(install_faking() == 0, "seccomp (faking setresuid...): %s", strerror(errno));
    if (thread_filters == 3) {
        char c;
        if (write(own[1], "o", 1) != 1 || read(owned[0], &c, 1) != 1) test_fail("own filter: %s", strerror(errno));
    }

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) install_faking(); /* a third filter, in both threads */
    if (test_corrupt(3)) syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0,
                                 &(struct sock_fprog){.len = 1, .filter = (struct sock_filter[]){
                                     BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)}});
    check_filters("main thread");
    if (write(go[1], "g", 1) != 1) test_fail("write: %s", strerror(errno));
    char c;
    if (read(done[0], &c, 1) != 1) test_fail("the thread did not finish its checks");
    pthread_join(thread, NULL);

    pid_t child = fork();
    if (child == 0) {
        setrlimit(RLIMIT_CORE, &(struct rlimit){0, 0}); /* killed by SIGSYS: no core file */
        if (test_corrupt(2)) _exit(0);                   /* as if prctl had passed */
        syscall(SYS_prctl, PR_GET_DUMPABLE, 0, 0, 0, 0);
        _exit(0);
    }
    int status = 0;
    CHECK(child > 0 && waitpid(child, &status, 0) == child, "fork/waitpid: %s", strerror(errno));
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS,
          "a child's prctl was not killed by the filter (status %#x)", status);
    return test_finish();
}
