/* tree: a process tree keeps its shape, its pids, sessions and process groups.
 *
 *   root (session leader, child subreaper)
 *   |- a                          same session and group as root
 *   |  `- a1                      grandchild, own process group (setpgid)
 *   |- b                          own session (setsid)
 *   |  `- b1                      in b's session, own process group
 *   |- zombie                     exited with status 42, not reaped before the dump
 *   `- orphan                     its parent exited before the dump: reparented to root
 *
 * State checked after restore, by every process itself: pid, ppid, pgid, sid as before
 * (getpid() and, unless /proc is the host's after --new-pidns, the kernel's view in
 * /proc/self/stat); the root is still a subreaper; the zombie is still a zombie child of
 * root (WNOHANG finds it) and its exit status 42 can be reaped; every child exits cleanly
 * when the root forwards the check. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

struct ids {
    pid_t pid, ppid, pgid, sid;
};

static struct ids my_ids(void) {
    struct ids v = {getpid(), getppid(), getpgid(0), getsid(0)};
    return v;
}

/* The kernel's own record, /proc/self/stat fields 4-6, must agree with the syscalls. The
 * root's parent is outside the tree (the runner, or ckpt-engine restoring without --detach),
 * so its ppid is not compared. */
static void check_ids(const char* role, struct ids want) {
    struct ids now = my_ids();
    if (strcmp(role, "root") == 0) want.ppid = now.ppid;
    if (test_corrupt(3) && strcmp(role, "b1") == 0) want.pgid++;
    CHECK(now.pid == want.pid, "%s: pid %d, expected %d", role, now.pid, want.pid);
    CHECK(now.ppid == want.ppid, "%s: ppid %d, expected %d", role, now.ppid, want.ppid);
    CHECK(now.pgid == want.pgid, "%s: pgid %d, expected %d", role, now.pgid, want.pgid);
    CHECK(now.sid == want.sid, "%s: sid %d, expected %d", role, now.sid, want.sid);
    if (!test_proc_is_ours()) return; /* host /proc after --new-pidns: host pids there */
    char stat[1024];
    int ppid = 0, pgid = 0, sid = 0;
    if (test_read_text("/proc/self/stat", stat, sizeof stat) > 0) {
        char* p = strrchr(stat, ')');
        if (p) sscanf(p + 2, "%*c %d %d %d", &ppid, &pgid, &sid);
    }
    CHECK(ppid == want.ppid && pgid == want.pgid && sid == want.sid,
          "%s: /proc/self/stat says ppid %d pgid %d sid %d", role, ppid, pgid, sid);
}

/* A child that sets itself up, optionally starts one child of its own, then waits. */
static pid_t spawn(const char* role, int new_session, int new_group, const char* sub_role) {
    test_sync_t sync;
    test_sync_init(&sync);
    pid_t pid = fork();
    if (pid != 0) {
        test_sync_wait(&sync);
        return pid;
    }
    if (new_session) setsid();
    if (new_group) setpgid(0, 0);
    pid_t sub = sub_role ? spawn(sub_role, 0, 1, NULL) : 0;
    struct ids ids = my_ids();
    test_sync_signal(&sync);
    test_wait_check();
    check_ids(role, ids);
    if (sub) {
        kill(sub, SIGTERM);
        test_expect_child_ok(sub, sub_role);
    }
    test_child_exit();
}

static char proc_state(pid_t pid) {
    char path[64], stat[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (test_read_text(path, stat, sizeof stat) < 0) return '?';
    char* p = strrchr(stat, ')');
    return p ? p[2] : '?';
}

int main(int argc, char** argv) {
    test_init(argc, argv, 6);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    struct ids root = my_ids();
    CHECK(root.sid == root.pid, "the runner should start the root as a session leader");

    pid_t a = spawn("a", 0, 0, "a1");
    pid_t b = spawn("b", 1, 0, "b1");

    pid_t zombie = fork();
    if (zombie == 0) _exit(42);
    siginfo_t info;
    waitid(P_PID, zombie, &info, WEXITED | WNOWAIT); /* it stays a zombie */

    /* orphan: its parent exits, so it is reparented to us (a subreaper) */
    test_sync_t orphan_sync;
    test_sync_init(&orphan_sync);
    pid_t middle = fork();
    if (middle == 0) {
        pid_t parent = getpid();
        if (fork() == 0) {
            while (getppid() == parent) usleep(1000);
            struct ids ids = my_ids(); /* after the reparenting */
            test_sync_signal(&orphan_sync);
            test_wait_check();
            check_ids("orphan", ids);
            test_child_exit();
        }
        _exit(0);
    }
    waitpid(middle, NULL, 0);
    test_sync_wait(&orphan_sync);
    pid_t orphan = 0;
    {
        char path[64], children[256] = "";
        snprintf(path, sizeof path, "/proc/self/task/%d/children", getpid());
        test_read_text(path, children, sizeof children);
        pid_t known[] = {a, b, zombie};
        for (char* tok = strtok(children, " \n"); tok; tok = strtok(NULL, " \n")) {
            pid_t c = atoi(tok);
            if (c != known[0] && c != known[1] && c != known[2]) orphan = c;
        }
    }
    CHECK(orphan > 0, "the orphan was not reparented to the root");

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) kill(a, SIGKILL);
    if (test_corrupt(2)) prctl(PR_SET_CHILD_SUBREAPER, 0);
    if (test_corrupt(4)) waitpid(zombie, NULL, 0);
    if (test_corrupt(5)) root.sid++;
    if (test_corrupt(6)) orphan = 0;

    check_ids("root", root);
    int subreaper = 0;
    prctl(PR_GET_CHILD_SUBREAPER, &subreaper);
    CHECK(subreaper == 1, "root is no longer a child subreaper");

    if (test_proc_is_ours())
        CHECK(proc_state(zombie) == 'Z', "zombie %d: state %c, expected Z", zombie,
              proc_state(zombie));
    int status = 0;
    pid_t got = waitpid(zombie, &status, WNOHANG);
    CHECK(got == zombie && WIFEXITED(status) && WEXITSTATUS(status) == 42,
          "zombie %d: waitpid gave %d, status %#x, expected exit 42", zombie, got, status);

    pid_t kids[] = {a, b, orphan};
    const char* roles[] = {"a", "b", "orphan"};
    for (int i = 0; i < 3; i++) {
        if (kids[i] <= 0) {
            test_fail("%s: no such child", roles[i]);
            continue;
        }
        kill(kids[i], SIGTERM);
        test_expect_child_ok(kids[i], roles[i]);
    }
    return test_finish();
}
