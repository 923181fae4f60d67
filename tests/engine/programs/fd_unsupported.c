/* fd_unsupported: holds an fd of a kind the engine does not dump (an io_uring instance),
 * for the negative test `unsupported-fd`: the dump must fail with a clear "unsupported"
 * error naming the fd, and leave the process running. Its own check: fd 9 is still the
 * fd it created. Built with EPOLL_CLOSED_TARGET (program fd_epoll_closed_target), fd 9 is
 * an epoll instead, watching an eventfd registered as fd 10 that was then moved to fd 11:
 * the kernel still watches the eventfd as fd 10, which the engine cannot register again.
 * Built with OWNER_OUTSIDE (program fd_owner_outside), fd 9 is the read end of a pipe of its
 * own (write end fd 10) with O_ASYNC whose owner (F_SETOWN) is the runner, outside the tree
 * (F_SETSIG SIGWINCH, which the runner ignores).
 * Built with PIDFD_REAPED (program pidfd_reaped), fd 9 is a pidfd of a child that exited and
 * was reaped; with PIDFD_OUTSIDE (program pidfd_outside), a pidfd of the runner, outside the
 * tree.
 * Built with DELETED_LINKED (program fd_deleted_linked), fd 9 is a file whose name was unlinked
 * while a second hard link to it lives in another folder; with DIR_REMOVED (program
 * fd_dir_removed), a directory removed (rmdir) after it was opened; with CWD_REMOVED (program
 * cwd_removed), fd 9 is /dev/null and the cwd a directory removed after it was entered.
 * Built with UNIX_RIGHTS (program fd_unix_rights), fd 9 is an end of an AF_UNIX socketpair
 * with a message queued that carries an fd (SCM_RIGHTS) no process holds any more (the sender
 * closed it: only the message has it); with UNIX_OUTSIDE (program
 * fd_unix_outside), a stream socket listening on an abstract name with a connection pending
 * from a process outside the tree (an orphan the runner adopted, which exits once the
 * listener is gone); with UNIX_CREDS_GONE (program fd_unix_creds_gone), a seqpacket pair's end
 * with SO_PASSCRED and a message queued by a child reaped since (its credentials name a pid no
 * process of the tree has).
 * Built with CONSOLE (program fd_console), fd 9 is /dev/console; with PTY_OUTSIDE (program
 * fd_pty_outside), the slave of a pty whose master only a process outside the tree holds (a
 * grandchild reparented to the runner, which exits once the slave is closed); with PTY_QUEUED
 * (program fd_pty_queued), the slave of a pty whose master (fd 10) wrote a line it has not
 * read; with FANOTIFY_QUEUED (program fanotify_queued), a fanotify group with an event queued.
 * Built with UDP_QUEUED (program udp_queued), fd 9 is a UDP socket on 127.0.0.1 with
 * SO_REUSEPORT and a datagram from fd 10 queued (the restore could not hold its port alone to
 * put it back); with UDP_QUEUED and UDP_ALONE (program udp_queued_alone), without SO_REUSEPORT
 * (restore_as_user_test.py: a user's restore may not send it again from its sender's address); with PACKET_SOCKET (program packet_socket), an AF_PACKET socket; with
 * NETLINK_OTHER (program netlink_usersock), a NETLINK_USERSOCK socket; with EBPF_FILTER (program
 * sock_ebpf_filter), a UDP socket with an eBPF socket filter (SO_ATTACH_BPF), which cannot be
 * read back.
 * Built with TCP_ACCEPT_QUEUE (program tcp_accept_queue), fd 9 is a TCP socket listening on
 * 127.0.0.1 with a connection (from fd 10) waiting in its accept queue.
 * Built with MQUEUE (program fd_mqueue), fd 9 is a POSIX message queue (mq_open, its name
 * removed at once) with a message queued; with SECRETMEM (program mem_secret), fd 9 is a
 * memfd_secret, one page of it mapped shared and written. */
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <mqueue.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

#define RING_FD 9

static void fd_target(char* out, size_t size) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", RING_FD);
    ssize_t n = readlink(link, out, size - 1);
    out[n > 0 ? n : 0] = '\0';
}

int main(int argc, char** argv) {
    test_init(argc, argv, 1);
#ifdef EPOLL_CLOSED_TARGET
    const char* kind = "eventpoll";
    int fd = epoll_create1(0);
    dup2(eventfd(0, 0), 10);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 10};
    if (epoll_ctl(fd, EPOLL_CTL_ADD, 10, &ev) != 0) test_fail("epoll_ctl: %s", strerror(errno));
    dup2(10, 11);
    close(10);
#elif defined(OWNER_OUTSIDE)
    const char* kind = "pipe";
    int p[2];
    if (pipe(p) != 0) test_fail("pipe: %s", strerror(errno));
    int fd = p[0];
    dup2(p[1], 10);
    close(p[1]);
    /* SIGWINCH, ignored by default: the runner is not hurt when the pipe closes. */
    if (fcntl(fd, F_SETOWN, getppid()) != 0 || fcntl(fd, F_SETSIG, SIGWINCH) != 0 ||
        fcntl(fd, F_SETFL, O_ASYNC) != 0)
        test_fail("F_SETOWN: %s", strerror(errno));
#elif defined(PIDFD_REAPED)
    const char* kind = "pidfd";
    pid_t child = fork();
    if (child == 0) _exit(0);
    siginfo_t si;
    waitid(P_PID, (id_t)child, &si, WEXITED | WNOWAIT);
    int fd = (int)syscall(SYS_pidfd_open, child, 0);
    waitpid(child, NULL, 0);
#elif defined(PIDFD_OUTSIDE)
    const char* kind = "pidfd";
    int fd = (int)syscall(SYS_pidfd_open, getppid(), 0);
#elif defined(DELETED_LINKED)
    const char* kind = "(deleted)";
    char a[600], other[600], b[700];
    test_data_path(a, sizeof a, "name");
    test_data_path(other, sizeof other, "elsewhere");
    mkdir(other, 0755);
    snprintf(b, sizeof b, "%s/other-link", other);
    unlink(b);
    int fd = open(a, O_CREAT | O_TRUNC | O_RDWR, 0644);
    if (fd < 0 || write(fd, "data", 4) != 4 || link(a, b) != 0 || unlink(a) != 0)
        test_fail("deleted linked file: %s", strerror(errno));
#elif defined(DIR_REMOVED)
    const char* kind = "(deleted)";
    char d[600];
    test_data_path(d, sizeof d, "removed");
    mkdir(d, 0755);
    int fd = open(d, O_RDONLY | O_DIRECTORY);
    if (fd < 0 || rmdir(d) != 0) test_fail("removed directory: %s", strerror(errno));
#elif defined(CWD_REMOVED)
    const char* kind = "/dev/null";
    char d[600];
    test_data_path(d, sizeof d, "removed-cwd");
    mkdir(d, 0755);
    if (chdir(d) != 0 || rmdir(d) != 0) test_fail("removed cwd: %s", strerror(errno));
    int fd = open("/dev/null", O_RDONLY);
#elif defined(UNIX_RIGHTS)
    const char* kind = "socket";
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) test_fail("socketpair: %s", strerror(errno));
    int fd = sv[0];
    int passed = open("/dev/null", O_RDONLY);  /* closed once sent */
    test_send_fd(sv[1], passed);
    close(passed);
#elif defined(UNIX_CREDS_GONE)
    /* A message queued with the credentials (SCM_CREDENTIALS) of a child reaped since: its pid
     * is no process of the tree, and cannot be given again. */
    const char* kind = "socket";
    int on = 1;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0) test_fail("socketpair: %s", strerror(errno));
    int fd = sv[0];
    if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0) test_fail("SO_PASSCRED: %s", strerror(errno));
    pid_t sender = fork();
    if (sender == 0) _exit(send(sv[1], "gone", 4, 0) == 4 ? 0 : 1);
    waitpid(sender, NULL, 0);
#elif defined(UNIX_OUTSIDE)
    const char* kind = "socket";
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    int len = snprintf(addr.sun_path + 1, sizeof addr.sun_path - 1, "ckpt-test-outside-%d", (int)getpid());
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len);
    if (bind(fd, (struct sockaddr*)&addr, alen) != 0 || listen(fd, 4) != 0) test_fail("bind/listen: %s", strerror(errno));
    pid_t middle = fork();
    if (middle == 0) {
        if (fork() == 0) {
            /* Adopted by the runner once the middle one exits: outside the tree. */
            int s = socket(AF_UNIX, SOCK_STREAM, 0);
            if (connect(s, (struct sockaddr*)&addr, alen) != 0) _exit(1);
            char b;
            (void)!read(s, &b, 1);  /* until the listener, and with it the connection, is gone */
            _exit(0);
        }
        _exit(0);
    }
    waitpid(middle, NULL, 0);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, 10000) != 1) test_fail("no connection from outside the tree");
#elif defined(FANOTIFY_QUEUED)
    const char* kind = "[fanotify]";
    char f[600];
    test_data_path(f, sizeof f, "watched");
    close(open(f, O_CREAT | O_WRONLY, 0644));
    int fd = fanotify_init(FAN_CLASS_NOTIF, O_RDONLY);
    if (fd < 0 || fanotify_mark(fd, FAN_MARK_ADD, FAN_CLOSE_WRITE, AT_FDCWD, f) != 0)
        test_fail("fanotify: %s", strerror(errno));
    close(open(f, O_WRONLY)); /* an event queued, never read */
#elif defined(CONSOLE)
    const char* kind = "/dev/console";
    int fd = open("/dev/console", O_RDONLY | O_NOCTTY | O_NONBLOCK);
#elif defined(PTY_OUTSIDE) || defined(PTY_QUEUED)
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    char name[64] = "";
    if (m < 0 || unlockpt(m) != 0 || ptsname_r(m, name, sizeof name) != 0) test_fail("posix_openpt: %s", strerror(errno));
    int slave = open(name, O_RDWR | O_NOCTTY);
    if (slave < 0) test_fail("open %s: %s", name, strerror(errno));
#ifdef PTY_OUTSIDE
    const char* kind = "/dev/pts/";
    pid_t middle = fork();
    if (middle == 0) {
        if (fork() == 0) {
            /* Reparented to the runner once middle exits: holds the master until the slave closes. */
            close(slave);
            char c;
            while (read(m, &c, 1) > 0 || errno == EINTR) {
            }
            _exit(0);
        }
        _exit(0);
    }
    waitpid(middle, NULL, 0);
    close(m);
    int fd = slave;
#else
    const char* kind = "/dev/pts/";
    if (write(m, "queued\n", 7) != 7) test_fail("write the master of %s: %s", name, strerror(errno));
    struct pollfd p = {.fd = slave, .events = POLLIN};
    if (poll(&p, 1, 10000) != 1) test_fail("%s has nothing to read", name);
    dup2(m, 10);
    close(m);
    int fd = slave;
#endif
#elif defined(TCP_ACCEPT_QUEUE)
    const char* kind = "socket";
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    socklen_t alen = sizeof addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int client = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(fd, (struct sockaddr*)&addr, sizeof addr) != 0 || listen(fd, 4) != 0 ||
        getsockname(fd, (struct sockaddr*)&addr, &alen) != 0 || connect(client, (struct sockaddr*)&addr, alen) != 0 ||
        dup2(client, 10) != 10)
        test_fail("listen/connect: %s", strerror(errno));
    close(client);
#elif defined(UDP_QUEUED)
    const char* kind = "socket";
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr;
    socklen_t alen = sizeof addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int sender = socket(AF_INET, SOCK_DGRAM, 0), one = 1;
#ifdef UDP_ALONE
    one = 0;
#endif
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 || bind(fd, (struct sockaddr*)&addr, sizeof addr) != 0 || getsockname(fd, (struct sockaddr*)&addr, &alen) != 0 ||
        sendto(sender, "queued", 6, 0, (struct sockaddr*)&addr, alen) != 6 || dup2(sender, 10) != 10)
        test_fail("bind/sendto: %s", strerror(errno));
    close(sender);
    struct pollfd queued = {fd, POLLIN, 0};
    if (poll(&queued, 1, 10000) != 1) test_fail("the datagram did not arrive");
#elif defined(EBPF_FILTER)
    const char* kind = "socket";
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct bpf_insn accept_all[2];
    memset(accept_all, 0, sizeof accept_all);
    accept_all[0].code = BPF_ALU64 | BPF_MOV | BPF_K; /* r0 = -1: take the whole packet */
    accept_all[0].imm = -1;
    accept_all[1].code = BPF_JMP | BPF_EXIT;
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insns = (uint64_t)(uintptr_t)accept_all;
    attr.insn_cnt = 2;
    attr.license = (uint64_t)(uintptr_t) "GPL";
    int prog = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    if (prog < 0 || setsockopt(fd, SOL_SOCKET, SO_ATTACH_BPF, &prog, sizeof prog) != 0)
        test_fail("an eBPF socket filter: %s", strerror(errno));
    close(prog);
#elif defined(PACKET_SOCKET)
    const char* kind = "socket";
    int fd = socket(AF_PACKET, SOCK_DGRAM, 0); /* protocol 0: receives nothing */
#elif defined(NETLINK_OTHER)
    const char* kind = "socket";
    int fd = socket(AF_NETLINK, SOCK_RAW, 2 /* NETLINK_USERSOCK */);
#elif defined(MQUEUE)
    const char* kind = "/ckpt-mq";
    char name[64];
    snprintf(name, sizeof name, "/ckpt-mq-%d", (int)getpid());
    struct mq_attr attr = {.mq_maxmsg = 4, .mq_msgsize = 64};
    int fd = mq_open(name, O_RDWR | O_CREAT | O_EXCL, 0600, &attr);
    if (fd >= 0 && (mq_unlink(name) != 0 || mq_send(fd, "queued", 6, 1) != 0)) test_fail("mq_send: %s", strerror(errno));
#elif defined(SECRETMEM)
    const char* kind = "secretmem";
    int fd = (int)syscall(SYS_memfd_secret, 0);
    char* secret = MAP_FAILED;
    if (fd >= 0 && ftruncate(fd, 4096) == 0)
        secret = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (secret == MAP_FAILED) test_fail("mapping a memfd_secret: %s", strerror(errno));
    else secret[0] = 1;
#else
    const char* kind = "io_uring";
    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    int fd = (int)syscall(SYS_io_uring_setup, 4, &params);
#endif
    if (fd < 0) test_fail("creating the %s: %s", kind, strerror(errno));
    dup2(fd, RING_FD);
    close(fd);
    char before[256], after[256];
    fd_target(before, sizeof before);
    CHECK(strstr(before, kind) != NULL, "fd %d is %s, not an %s", RING_FD, before, kind);
    test_ready();
    test_wait_check();
    if (test_corrupt(1)) close(RING_FD);
    fd_target(after, sizeof after);
    CHECK(strcmp(before, after) == 0, "fd %d is now '%s', was '%s'", RING_FD, after, before);
    return test_finish();
}
