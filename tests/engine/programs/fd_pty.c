/* fd_pty: pty pairs held by the tree.
 *   A (master fd 20, a dup at fd 21, O_NONBLOCK): the slave is the controlling terminal of the
 *     child, which leads a session of its own (setsid, TIOCSCTTY) and holds the slave at fd 5
 *     and /dev/tty at fd 6; the foreground process group is the grandchild's own. Canonical
 *     mode with echo, non-default erase and kill characters, IUTF8, 19200 baud, a window of
 *     33x101 (640x480 pixels). The child wrote "early\n" and "more" to it that the root's master
 *     has not read at dump (the master reads "early\r\nmore", ONLCR done once).
 *   B (master fd 30, slave fd 31 in the root, exclusive): raw (cfmakeraw), packet mode, a
 *     window of 10x20; its node in devpts owned by 4321:8765, mode 0604.
 *   C (master fd 40): locked, nobody opened the slave, a window of 5x6 (7x8 pixels).
 * After the restore: the same pts names (ttyname), one description for fds 20 and 21 with
 * O_NONBLOCK, packet mode, lock, exclusive mode, termios and window sizes; the grandchild's
 * controlling terminal, session and foreground group; a line the root writes through master A
 * is read by the grandchild in canonical mode (echoed with ONLCR) and its answer reaches the
 * master; packet-mode data through B both ways. Not in the new-pidns modes: the original holds
 * the pts numbers, which the restore refuses to change. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "testlib.h"

#define A_MASTER 20
#define A_DUP 21
#define B_MASTER 30
#define B_SLAVE 31
#define C_MASTER 40
#define CHILD_SLAVE 5
#define CHILD_TTY 6

static const struct winsize wa = {33, 101, 640, 480};
static const struct winsize wb = {10, 20, 0, 0};
static const struct winsize wc = {5, 6, 7, 8};

/* Puts fd at number at (fails the test when it cannot). */
static void move_fd(int fd, int at, const char* what) {
    if (fd < 0) test_fail("%s: %s", what, strerror(errno));
    if (fd < 0 || fd == at) return;
    if (dup2(fd, at) != at) test_fail("%s: dup2: %s", what, strerror(errno));
    close(fd);
}

static void open_master(int at, char* name, size_t size) {
    move_fd(posix_openpt(O_RDWR | O_NOCTTY), at, "posix_openpt");
    if (ptsname_r(at, name, size) != 0) test_fail("ptsname: %s", strerror(errno));
}

static int same_termios(const struct termios* a, const struct termios* b) {
    return a->c_iflag == b->c_iflag && a->c_oflag == b->c_oflag && a->c_cflag == b->c_cflag &&
           a->c_lflag == b->c_lflag && memcmp(a->c_cc, b->c_cc, sizeof a->c_cc) == 0 &&
           cfgetispeed(a) == cfgetispeed(b) && cfgetospeed(a) == cfgetospeed(b);
}

static int same_winsize(int fd, const struct winsize* want) {
    struct winsize w;
    return ioctl(fd, TIOCGWINSZ, &w) == 0 && w.ws_row == want->ws_row && w.ws_col == want->ws_col &&
           w.ws_xpixel == want->ws_xpixel && w.ws_ypixel == want->ws_ypixel;
}

/* Reads from fd until exactly want has come (or something else, or nothing for 10 s). */
static int read_exactly(int fd, const char* want, size_t len) {
    char buf[256];
    size_t got = 0;
    while (got < len) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10000) != 1) break;
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    if (got == len && memcmp(buf, want, len) == 0) return 1;
    test_fail("fd %d: read '%s' (%zu bytes), expected '%s'", fd, buf, got, want);
    return 0;
}

/* The grandchild: in the foreground of the child's session, it reads a line from its
 * terminal once restored and answers through it. */
static void grandchild(const char* a_name, const struct termios* ta) {
    /* Not before the child made this group the foreground one: a background group reading its
     * terminal is stopped (SIGTTIN), and would never answer. */
    for (int i = 0; tcgetpgrp(CHILD_SLAVE) != getpid(); i++) {
        if (i == 30000) test_fail("grandchild: never in the foreground of its terminal");
        usleep(1000);
    }
    char line[64];
    ssize_t n = read(CHILD_SLAVE, line, sizeof line - 1);
    line[n > 0 ? n : 0] = '\0';
    if (test_corrupt(6)) ioctl(CHILD_SLAVE, TIOCNOTTY);
    CHECK(n == 6 && strcmp(line, "hello\n") == 0, "grandchild: read '%s' (%zd) from its terminal", line, n);
    char name[64] = "";
    CHECK(ttyname_r(CHILD_SLAVE, name, sizeof name) == 0 && strcmp(name, a_name) == 0,
          "grandchild: its terminal is '%s', not %s", name, a_name);
    CHECK(tcgetsid(CHILD_SLAVE) == getppid() && getsid(0) == getppid(),
          "grandchild: the terminal's session is %d, its own %d, not the child's %d", tcgetsid(CHILD_SLAVE), getsid(0),
          getppid());
    CHECK(tcgetpgrp(CHILD_SLAVE) == getpid() && getpgrp() == getpid(),
          "grandchild: the foreground group is %d, not its own %d", tcgetpgrp(CHILD_SLAVE), getpid());
    struct stat st;
    unsigned int dev = 0;
    CHECK(fstat(CHILD_SLAVE, &st) == 0 && ioctl(CHILD_TTY, TIOCGDEV, &dev) == 0 && dev == st.st_rdev,
          "grandchild: /dev/tty (fd %d) is not its terminal", CHILD_TTY);
    CHECK(syscall(SYS_kcmp, getppid(), getpid(), KCMP_FILE, CHILD_TTY, CHILD_TTY) == 0,
          "grandchild: /dev/tty (fd %d) is no longer one description with the child's", CHILD_TTY);
    int t = open("/dev/tty", O_RDWR | O_NOCTTY);
    CHECK(t >= 0, "grandchild: no controlling terminal (open /dev/tty: %s)", strerror(errno));
    close(t);
    struct termios now;
    CHECK(tcgetattr(CHILD_SLAVE, &now) == 0 && same_termios(&now, ta), "grandchild: the termios of its terminal changed");
    CHECK(same_winsize(CHILD_SLAVE, &wa), "grandchild: the window size of its terminal changed");
    const char* answer = test_failed() ? "FAIL\n" : "OK hello\n";
    if (write(CHILD_SLAVE, answer, strlen(answer)) != (ssize_t)strlen(answer)) test_fail("grandchild: write");
    test_child_exit();
}

int main(int argc, char** argv) {
    test_init(argc, argv, 8);
    char a_name[64], b_name[64], c_name[64];

    open_master(A_MASTER, a_name, sizeof a_name);
    if (grantpt(A_MASTER) != 0 || unlockpt(A_MASTER) != 0) test_fail("unlockpt A: %s", strerror(errno));
    struct termios ta;
    if (tcgetattr(A_MASTER, &ta) != 0) test_fail("tcgetattr A: %s", strerror(errno));
    ta.c_lflag |= ICANON | ECHO;
    ta.c_oflag |= OPOST | ONLCR;
    ta.c_iflag |= IUTF8;
    ta.c_cc[VERASE] = 0x08;
    ta.c_cc[VKILL] = 0x19;
    cfsetspeed(&ta, B19200);
    if (tcsetattr(A_MASTER, TCSANOW, &ta) != 0 || tcgetattr(A_MASTER, &ta) != 0) test_fail("tcsetattr A: %s", strerror(errno));
    if (ioctl(A_MASTER, TIOCSWINSZ, &wa) != 0) test_fail("TIOCSWINSZ A: %s", strerror(errno));
    dup2(A_MASTER, A_DUP);
    fcntl(A_MASTER, F_SETFL, O_NONBLOCK);

    open_master(B_MASTER, b_name, sizeof b_name);
    if (unlockpt(B_MASTER) != 0) test_fail("unlockpt B: %s", strerror(errno));
    move_fd(open(b_name, O_RDWR | O_NOCTTY), B_SLAVE, "open slave B");
    struct termios tb;
    tcgetattr(B_SLAVE, &tb);
    cfmakeraw(&tb);
    if (tcsetattr(B_SLAVE, TCSANOW, &tb) != 0 || tcgetattr(B_SLAVE, &tb) != 0) test_fail("tcsetattr B: %s", strerror(errno));
    int on = 1;
    if (ioctl(B_SLAVE, TIOCSWINSZ, &wb) != 0 || ioctl(B_MASTER, TIOCPKT, &on) != 0 || ioctl(B_SLAVE, TIOCEXCL) != 0)
        test_fail("pty B: %s", strerror(errno));

    open_master(C_MASTER, c_name, sizeof c_name);
    if (ioctl(C_MASTER, TIOCSPTLCK, &on) != 0 || ioctl(C_MASTER, TIOCSWINSZ, &wc) != 0)
        test_fail("pty C: %s", strerror(errno));

    test_sync_t started;
    test_sync_init(&started);
    pid_t child = fork();
    if (child == 0) {
        for (int fd = 20; fd <= 40; ++fd) close(fd);
        if (setsid() < 0) test_fail("child: setsid: %s", strerror(errno));
        move_fd(open(a_name, O_RDWR | O_NOCTTY), CHILD_SLAVE, "child: open slave A");
        if (ioctl(CHILD_SLAVE, TIOCSCTTY, 0) != 0) test_fail("child: TIOCSCTTY %s: %s", a_name, strerror(errno));
        move_fd(open("/dev/tty", O_RDWR), CHILD_TTY, "child: open /dev/tty");
        pid_t gc = fork();
        if (gc == 0) {
            setpgid(0, 0);
            grandchild(a_name, &ta);
        }
        setpgid(gc, gc);
        if (tcsetpgrp(CHILD_SLAVE, gc) != 0) test_fail("child: tcsetpgrp: %s", strerror(errno));
        if (write(CHILD_SLAVE, "early\nmore", 10) != 10) test_fail("child: write %s: %s", a_name, strerror(errno));
        test_sync_signal(&started);
        test_wait_check();
        CHECK(tcgetsid(CHILD_SLAVE) == getpid(), "child: the session of its terminal is %d, not its own", tcgetsid(CHILD_SLAVE));
        test_expect_child_ok(gc, "grandchild");
        test_child_exit();
    }
    test_sync_wait(&started);

    /* B's node given another owner and mode (what grantpt, mesg or a terminal server do). */
    if (fchown(B_SLAVE, 4321, 8765) != 0 || fchmod(B_SLAVE, 0604) != 0) test_fail("chown B: %s", strerror(errno));
    test_ready();
    test_wait_check();
    kill(child, SIGTERM); /* the child's session is its own: the check signal is passed on */

    struct winsize other = {1, 2, 3, 4};
    int off = 0;
    if (test_corrupt(1)) ioctl(A_MASTER, TIOCSWINSZ, &other);
    if (test_corrupt(2)) ioctl(B_MASTER, TIOCPKT, &off);
    if (test_corrupt(3)) ioctl(C_MASTER, TIOCSPTLCK, &off);
    if (test_corrupt(4)) {
        struct termios t = tb;
        t.c_lflag |= ECHO;
        tcsetattr(B_SLAVE, TCSANOW, &t);
    }
    if (test_corrupt(5)) fcntl(A_DUP, F_SETFL, 0);
    if (test_corrupt(7)) ioctl(B_SLAVE, TIOCNXCL);
    if (test_corrupt(8)) fchmod(B_SLAVE, 0620);
    struct stat b_node;
    CHECK(fstat(B_SLAVE, &b_node) == 0 && b_node.st_uid == 4321 && b_node.st_gid == 8765 &&
              (b_node.st_mode & 07777) == 0604,
          "slave B's node is %u:%u mode %o, expected 4321:8765 mode 604", b_node.st_uid, b_node.st_gid,
          b_node.st_mode & 07777);

    char name[64];
    CHECK(ptsname_r(A_MASTER, name, sizeof name) == 0 && strcmp(name, a_name) == 0, "master A is %s, was %s", name, a_name);
    CHECK(ptsname_r(B_MASTER, name, sizeof name) == 0 && strcmp(name, b_name) == 0, "master B is %s, was %s", name, b_name);
    CHECK(ptsname_r(C_MASTER, name, sizeof name) == 0 && strcmp(name, c_name) == 0, "master C is %s, was %s", name, c_name);
    CHECK(ttyname_r(B_SLAVE, name, sizeof name) == 0 && strcmp(name, b_name) == 0, "slave B is %s, was %s", name, b_name);
    CHECK(syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, A_MASTER, A_DUP) == 0,
          "fds %d and %d are no longer one description", A_MASTER, A_DUP);
    CHECK(fcntl(A_DUP, F_GETFL) & O_NONBLOCK, "O_NONBLOCK of master A lost");
    int v = -1;
    CHECK(ioctl(B_MASTER, TIOCGPKT, &v) == 0 && v == 1, "packet mode of B lost");
    CHECK(ioctl(A_MASTER, TIOCGPKT, &v) == 0 && v == 0, "packet mode on A");
    CHECK(ioctl(C_MASTER, TIOCGPTLCK, &v) == 0 && v == 1, "C is no longer locked");
    CHECK(ioctl(A_MASTER, TIOCGPTLCK, &v) == 0 && v == 0, "A is locked");
    CHECK(ioctl(B_SLAVE, TIOCGEXCL, &v) == 0 && v == 1, "slave B is no longer exclusive");
    CHECK(same_winsize(C_MASTER, &wc) && same_winsize(B_SLAVE, &wb), "a window size changed");
    struct termios now;
    CHECK(tcgetattr(B_SLAVE, &now) == 0 && same_termios(&now, &tb), "the termios of B changed");
    CHECK(tcgetattr(A_MASTER, &now) == 0 && same_termios(&now, &ta), "the termios of A changed");
    int c = open(c_name, O_RDWR | O_NOCTTY);
    CHECK(c < 0 && errno == EIO, "the locked slave %s could be opened (or: %s)", c_name, strerror(errno));
    if (c >= 0) close(c);

    /* B, raw in packet mode: each read of the master starts with TIOCPKT_DATA. */
    CHECK(write(B_SLAVE, "x", 1) == 1, "write slave B");
    read_exactly(B_MASTER, "\0x", 2);
    CHECK(write(B_MASTER, "a\n", 2) == 2, "write master B");
    read_exactly(B_SLAVE, "a\n", 2);

    /* A: a line to the grandchild, echoed; its answer. */
    CHECK(write(A_MASTER, "hello\n", 6) == 6, "write master A");
    read_exactly(A_MASTER, "early\r\nmorehello\r\nOK hello\r\n", 28);
    test_expect_child_ok(child, "child");
    return test_finish();
}
