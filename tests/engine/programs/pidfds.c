/* pidfds: pidfds of processes of the tree (issue 11).
 *
 * The root holds a pidfd of itself (PIDFD_NONBLOCK), one of a live child with a dup of it
 * (one description), and one of a zombie child (exited 7, not reaped). After restore, each
 * must name the same process, not merely a number:
 *  - itself: a signal sent through it (pidfd_send_signal, SIGUSR2, blocked) is pending in the
 *    root; O_NONBLOCK is kept;
 *  - the live child: SIGUSR1 through it ends the child's wait, and waitid(P_PIDFD) on it
 *    reports that child's pid and exit 0;
 *  - the dup: F_SETFL O_NONBLOCK on one fd shows on the other (one description);
 *  - the zombie: waitid(P_PIDFD, WEXITED) on it reports its pid and exit code 7.
 * The child holds a pidfd of its parent, the root: after restore it names the same process
 * as a new pidfd_open(getppid()) (one inode per process where the kernel has pidfs).
 * Where /proc is ours, fdinfo's Pid: of each is also compared. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK O_NONBLOCK
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static int pidfd_open(pid_t pid, unsigned flags) { return (int)syscall(SYS_pidfd_open, pid, flags); }
static int pidfd_send_signal(int fd, int sig) { return (int)syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0); }

static long fdinfo_pid(int fd) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    if (test_read_text(path, buf, sizeof buf) <= 0) return -999;
    char* p = strstr(buf, "\nPid:");
    return p ? strtol(p + 5, NULL, 10) : -998;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 7);

    test_sync_t sync;
    test_sync_init(&sync);
    pid_t child = fork();
    if (child == 0) {
        sigset_t usr1;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        sigprocmask(SIG_BLOCK, &usr1, NULL);
        int parent_fd = 30, opened = pidfd_open(getppid(), 0);
        dup2(opened, parent_fd);
        close(opened);
        test_sync_signal(&sync);
        int sig = 0;
        sigwait(&usr1, &sig);
        if (test_corrupt(7)) dup2(pidfd_open(getpid(), 0), parent_fd);
        int fresh = pidfd_open(getppid(), 0);
        struct stat held, now;
        if (fstat(parent_fd, &held) != 0 || fstat(fresh, &now) != 0)
            test_fail("child: fstat of the parent's pidfd: %s", strerror(errno));
        else if (held.st_ino != now.st_ino)
            test_fail("child: its pidfd of the parent is not the parent's (inode %lu, expected %lu)",
                      (unsigned long)held.st_ino, (unsigned long)now.st_ino);
        if (test_proc_is_ours() && fdinfo_pid(parent_fd) != getppid())
            test_fail("child: parent pidfd: Pid %ld, expected %d", fdinfo_pid(parent_fd), getppid());
        test_child_exit();
    }
    test_sync_wait(&sync);
    pid_t zombie = fork();
    if (zombie == 0) _exit(7);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    CHECK(waitid(P_PID, (id_t)zombie, &si, WEXITED | WNOWAIT) == 0, "waitid(zombie, WNOWAIT): %s", strerror(errno));

    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    sigaddset(&usr2, SIGUSR1); /* a corrupted pidfd may send the child's signal here */
    sigprocmask(SIG_BLOCK, &usr2, NULL);

    /* Fixed numbers with gaps, so the fd table itself is part of what is checked. */
    int self_fd = 20, child_fd = 21, dup_fd = 23, zombie_fd = 25;
    int opened[3] = {pidfd_open(getpid(), PIDFD_NONBLOCK), pidfd_open(child, 0), pidfd_open(zombie, 0)};
    dup2(opened[0], self_fd);
    dup2(opened[1], child_fd);
    dup2(child_fd, dup_fd);
    dup2(opened[2], zombie_fd);
    for (int i = 0; i < 3; ++i) close(opened[i]);
    CHECK(fcntl(self_fd, F_GETFL) >= 0 && fcntl(child_fd, F_GETFL) >= 0 && fcntl(zombie_fd, F_GETFL) >= 0,
          "pidfd_open: %s", strerror(errno));

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) dup2(child_fd, self_fd);
    if (test_corrupt(2)) dup2(self_fd, child_fd);
    if (test_corrupt(3)) waitpid(zombie, NULL, 0);
    if (test_corrupt(4)) fcntl(self_fd, F_SETFL, 0);
    if (test_corrupt(5)) dup2(pidfd_open(child, 0), dup_fd);
    if (test_corrupt(6)) dup2(zombie_fd, child_fd);

    if (test_proc_is_ours()) {
        CHECK(fdinfo_pid(self_fd) == getpid(), "self pidfd: Pid %ld, expected %d", fdinfo_pid(self_fd), getpid());
        CHECK(fdinfo_pid(child_fd) == child, "child pidfd: Pid %ld, expected %d", fdinfo_pid(child_fd), child);
        CHECK(fdinfo_pid(zombie_fd) == zombie, "zombie pidfd: Pid %ld, expected %d", fdinfo_pid(zombie_fd), zombie);
    }
    /* Flags and sharing. */
    CHECK(fcntl(self_fd, F_GETFL) & O_NONBLOCK, "self pidfd lost PIDFD_NONBLOCK");
    CHECK(!(fcntl(dup_fd, F_GETFL) & O_NONBLOCK), "the child's pidfd dup has O_NONBLOCK already");
    fcntl(child_fd, F_SETFL, O_NONBLOCK);
    CHECK(fcntl(dup_fd, F_GETFL) & O_NONBLOCK, "fd %d and its dup %d are no longer one description", child_fd, dup_fd);
    fcntl(child_fd, F_SETFL, 0);

    /* Itself. */
    if (pidfd_send_signal(self_fd, SIGUSR2) != 0) test_fail("pidfd_send_signal(self): %s", strerror(errno));
    sigset_t pending;
    sigpending(&pending);
    CHECK(sigismember(&pending, SIGUSR2), "a signal sent through the self pidfd is not pending in the process");

    /* The zombie: its exit, through its pidfd (before the child: a wait for any is not used). */
    memset(&si, 0, sizeof si);
    if (waitid((idtype_t)P_PIDFD, (id_t)zombie_fd, &si, WEXITED | WNOHANG) != 0)
        test_fail("waitid(zombie pidfd): %s", strerror(errno));
    else
        CHECK(si.si_pid == zombie && si.si_code == CLD_EXITED && si.si_status == 7,
              "zombie pidfd: waitid says pid %d code %d status %d, expected %d exited 7", si.si_pid, si.si_code,
              si.si_status, zombie);

    /* The live child: woken and waited for through its pidfd. */
    if (pidfd_send_signal(child_fd, SIGUSR1) != 0) test_fail("pidfd_send_signal(child): %s", strerror(errno));
    memset(&si, 0, sizeof si);
    if (waitid((idtype_t)P_PIDFD, (id_t)child_fd, &si, WEXITED) != 0) {
        test_fail("waitid(child pidfd): %s", strerror(errno));
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    } else {
        CHECK(si.si_pid == child && si.si_code == CLD_EXITED && si.si_status == 0,
              "child pidfd: waitid says pid %d code %d status %d, expected %d exited 0", si.si_pid, si.si_code,
              si.si_status, child);
    }
    /* Nothing else left to reap. */
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    return test_finish();
}
