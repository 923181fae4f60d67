/* zombies: children that exited and were not waited for come back as they were.
 *
 *   root (session leader, counts SIGCHLD with a handler)
 *   |- z_sess    setsid(), named "z_sess", exit 3          own session and group
 *   |- z_pgrp    setpgid(0, 0), exit 4                     own group, root's session
 *   |- leader    alive, own process group
 *   |- z_term    in leader's group, killed by SIGTERM      signal status
 *   |- z_kill    killed by SIGKILL
 *   `- z_segv    RLIMIT_CORE 0, killed by SIGSEGV          no core flag
 *
 * Checked after restore, by root: every zombie in state Z with its pgrp, session and name in
 * /proc/PID/stat (when /proc is ours); no SIGCHLD beyond those of the exits before the dump
 * (the restore's own exits must not show); waitpid gives each one's exact wait status. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

#define NZ 5

static volatile sig_atomic_t sigchld_count;
static void on_sigchld(int sig) {
    (void)sig;
    sigchld_count++;
}

struct zombie {
    const char* name;
    pid_t pid, pgid, sid;
    int status; /* expected wait status */
};

static void proc_ids(pid_t pid, char* state, char* comm, pid_t* pgid, pid_t* sid) {
    char path[64], stat[1024];
    *state = '?';
    comm[0] = 0;
    *pgid = *sid = -1;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (test_read_text(path, stat, sizeof stat) < 0) return;
    char* open = strchr(stat, '(');
    char* close = strrchr(stat, ')');
    if (!open || !close) return;
    snprintf(comm, 17, "%.*s", (int)(close - open - 1), open + 1);
    sscanf(close + 2, "%c %*d %d %d", state, pgid, sid);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 5);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);

    test_sync_t sync;
    test_sync_init(&sync);
    pid_t leader = fork();
    if (leader == 0) {
        setpgid(0, 0);
        test_sync_signal(&sync);
        test_wait_check();
        test_child_exit();
    }
    test_sync_wait(&sync);

    struct zombie z[NZ] = {
        {"z_sess", 0, 0, 0, 3 << 8},
        {"z_pgrp", 0, 0, 0, 4 << 8},
        {"z_term", 0, 0, 0, SIGTERM},
        {"z_kill", 0, 0, 0, SIGKILL},
        {"z_segv", 0, 0, 0, SIGSEGV},
    };
    for (int i = 0; i < NZ; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            prctl(PR_SET_NAME, z[i].name);
            if (i == 0) setsid();
            if (i == 1) setpgid(0, 0);
            if (i == 2) setpgid(0, leader);
            if (i == 4) {
                struct rlimit no_core = {0, 0};
                setrlimit(RLIMIT_CORE, &no_core);
            }
            sigset_t all;
            sigemptyset(&all);
            sigprocmask(SIG_SETMASK, &all, NULL);
            signal(SIGTERM, SIG_DFL);
            if (i == 0 || i == 1) _exit(WEXITSTATUS(z[i].status));
            if (i == 4) raise(SIGSEGV); /* default action: killed, no core (limit 0) */
            raise(z[i].status);
            _exit(99);
        }
        z[i].pid = pid;
        siginfo_t info;
        waitid(P_PID, pid, &info, WEXITED | WNOWAIT); /* it stays a zombie */
        z[i].sid = i == 0 ? pid : getsid(0);
        z[i].pgid = i <= 1 ? pid : i == 2 ? leader : getpgid(0);
    }
    usleep(20000);
    int chld_before = sigchld_count;

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) z[0].sid = getsid(0);
    if (test_corrupt(2)) z[2].pgid = getpgid(0);
    if (test_corrupt(3)) z[3].status = SIGTERM;
    if (test_corrupt(4)) z[1].name = "zombies";
    if (test_corrupt(5)) raise(SIGCHLD);

    CHECK(sigchld_count == chld_before, "SIGCHLD caught %d times since the set-up, expected none",
          sigchld_count - chld_before);
    for (int i = 0; i < NZ; i++) {
        if (test_proc_is_ours()) {
            char state, comm[17];
            pid_t pgid, sid;
            proc_ids(z[i].pid, &state, comm, &pgid, &sid);
            CHECK(state == 'Z', "%s (%d): state %c, expected Z", z[i].name, z[i].pid, state);
            CHECK(pgid == z[i].pgid && sid == z[i].sid, "%s (%d): pgrp %d session %d, expected %d and %d", z[i].name,
                  z[i].pid, pgid, sid, z[i].pgid, z[i].sid);
            CHECK(strcmp(comm, z[i].name) == 0, "%s (%d): named %s", z[i].name, z[i].pid, comm);
        }
        int status = -1;
        pid_t got = waitpid(z[i].pid, &status, WNOHANG);
        CHECK(got == z[i].pid && status == z[i].status, "%s (%d): waitpid gave %d, status %#x, expected %#x",
              z[i].name, z[i].pid, got, status, z[i].status);
    }
    kill(leader, SIGTERM);
    test_expect_child_ok(leader, "leader");
    return test_finish();
}
