/* fd_unix_named: AF_UNIX sockets with names inside the tree: listening, accepted, pending,
 * bound datagram sockets with queued messages and their senders, a deleted bound path.
 *
 * Parent:
 *   20 stream listening on DATA/srv.sock (mode 0640), backlog 8: one connection pending (the
 *      child's 31), one accepted (22)
 *   21 seqpacket listening on the abstract @ckpt-un-sp-PID
 *   22 accepted from 20: the child's 30 (bound to @ckpt-un-cl-PID); 5000 bytes queued for it,
 *      3000 queued for the child
 *   23 accepted from 21, its client 26 in the parent: 2 packets queued for 23 then the client
 *      shut down for writing, 1 packet queued for 26
 *   40 datagram bound to DATA/dg.sock: queued a message from 42 (unnamed), two from the
 *      child's 41 (@ckpt-un-dg-PID, connected to 40), one from 44 (autobind name)
 *      then a socket filter keeping 200 bytes of each message
 *   43 datagram bound to DATA/gone.sock, the file deleted since: one message queued
 *   44 datagram with an autobind name; 45 a stream socket neither bound nor connected
 * Child: 30 (accepted as 22), 31 (pending on 20), 41 (connected to 40).
 *
 * Checked after restore: every name (getsockname, getpeername) as before, the socket file's
 * mode, the deleted name still gone, every byte and message with its sender and boundaries
 * (fd 40's filter set again only after its queue: its messages whole), fd 40's filter,
 * end of file on 23, the pending connection accepted only now (and the child reading what is
 * sent on it), nothing else pending, new connections to the path and the abstract name. */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "testlib.h"

#define DOWN_BYTES 5000 /* child -> 22 */
#define UP_BYTES 3000   /* 22 -> child */

static char srv_path[256], dg_path[256], gone_path[256];
static struct sockaddr_un sp_addr, cl_addr, dg_abs; /* abstract names */
static socklen_t sp_len, cl_len, dg_abs_len;

static socklen_t path_addr(struct sockaddr_un* a, const char* path) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    snprintf(a->sun_path, sizeof a->sun_path, "%s", path);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
}

static socklen_t abstract_addr(struct sockaddr_un* a, const char* name, int pid) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    int n = snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "%s-%d", name, pid);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

static int sock_at(int type, int fd) {
    int s = socket(AF_UNIX, type, 0);
    if (s < 0) test_fail("socket: %s", strerror(errno));
    if (s != fd) {
        dup2(s, fd);
        close(s);
    }
    return fd;
}

static void must(int ok, const char* what) {
    if (!ok) test_fail("set-up: %s: %s", what, strerror(errno));
}

static int same_addr(const struct sockaddr_un* a, socklen_t alen, const struct sockaddr_un* b, socklen_t blen) {
    return alen == blen && memcmp(a, b, alen) == 0;
}

static int name_is(int fd, int peer, const struct sockaddr_un* want, socklen_t wlen) {
    struct sockaddr_un a;
    socklen_t len = sizeof a;
    memset(&a, 0, sizeof a);
    int r = peer ? getpeername(fd, (struct sockaddr*)&a, &len) : getsockname(fd, (struct sockaddr*)&a, &len);
    return r == 0 && same_addr(&a, len, want, wlen);
}

static int unnamed(int fd, int peer) {
    struct sockaddr_un a;
    socklen_t len = sizeof a;
    int r = peer ? getpeername(fd, (struct sockaddr*)&a, &len) : getsockname(fd, (struct sockaddr*)&a, &len);
    return r == 0 && len == sizeof(sa_family_t);
}

/* Receives one message of exactly len bytes of seed, from the given sender (flen 0: unnamed). */
static int expect_message(int fd, size_t len, uint64_t seed, const struct sockaddr_un* from, socklen_t flen) {
    static unsigned char m[8192];
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, 3000) != 1) return 0;
    struct sockaddr_un a;
    socklen_t alen = sizeof a;
    memset(&a, 0, sizeof a);
    ssize_t n = recvfrom(fd, m, sizeof m, MSG_DONTWAIT, (struct sockaddr*)&a, &alen);
    if (n != (ssize_t)len || test_verify(m, len, seed) >= 0) return 0;
    if (from && !(alen == flen && (flen == 0 || memcmp(&a, from, flen) == 0))) return 0;
    return 1;
}

static void send_message(int fd, size_t len, uint64_t seed) {
    static unsigned char m[8192];
    test_fill(m, len, seed);
    if (send(fd, m, len, 0) != (ssize_t)len) test_fail("set-up: send: %s", strerror(errno));
}

static void sendto_message(int fd, size_t len, uint64_t seed, const char* path) {
    static unsigned char m[8192];
    struct sockaddr_un a;
    socklen_t alen = path_addr(&a, path);
    test_fill(m, len, seed);
    if (sendto(fd, m, len, 0, (struct sockaddr*)&a, alen) != (ssize_t)len) test_fail("set-up: sendto: %s", strerror(errno));
}

int main(int argc, char** argv) {
    test_init(argc, argv, 7);
    signal(SIGPIPE, SIG_IGN);
    int pid = (int)getpid();
    test_data_path(srv_path, sizeof srv_path, "srv.sock");
    test_data_path(dg_path, sizeof dg_path, "dg.sock");
    test_data_path(gone_path, sizeof gone_path, "gone.sock");
    unlink(srv_path);
    unlink(dg_path);
    unlink(gone_path);
    struct sockaddr_un srv_addr, dg_addr, gone_addr, auto_addr;
    socklen_t srv_len = path_addr(&srv_addr, srv_path), dg_len = path_addr(&dg_addr, dg_path);
    socklen_t gone_len = path_addr(&gone_addr, gone_path), auto_len;
    sp_len = abstract_addr(&sp_addr, "ckpt-un-sp", pid);
    cl_len = abstract_addr(&cl_addr, "ckpt-un-cl", pid);
    dg_abs_len = abstract_addr(&dg_abs, "ckpt-un-dg", pid);

    sock_at(SOCK_STREAM, 20);
    must(bind(20, (struct sockaddr*)&srv_addr, srv_len) == 0 && chmod(srv_path, 0640) == 0 && listen(20, 8) == 0,
         "listen on srv.sock");
    sock_at(SOCK_SEQPACKET, 21);
    must(bind(21, (struct sockaddr*)&sp_addr, sp_len) == 0 && listen(21, 4) == 0, "listen on the abstract name");
    sock_at(SOCK_SEQPACKET, 26);
    must(connect(26, (struct sockaddr*)&sp_addr, sp_len) == 0, "connect 26");
    int a = accept(21, NULL, NULL);
    must(a >= 0 && dup2(a, 23) == 23, "accept 23");
    close(a);
    send_message(26, 100, 60);
    send_message(26, 2000, 61);
    shutdown(26, SHUT_WR);
    send_message(23, 300, 62);

    sock_at(SOCK_DGRAM, 40);
    must(bind(40, (struct sockaddr*)&dg_addr, dg_len) == 0, "bind dg.sock");
    sock_at(SOCK_DGRAM, 42);
    sendto_message(42, 500, 40, dg_path);
    sock_at(SOCK_DGRAM, 43);
    must(bind(43, (struct sockaddr*)&gone_addr, gone_len) == 0, "bind gone.sock");
    sendto_message(42, 77, 43, gone_path);
    must(unlink(gone_path) == 0, "unlink gone.sock");
    sock_at(SOCK_DGRAM, 44);
    sa_family_t fam = AF_UNIX;
    must(bind(44, (struct sockaddr*)&fam, sizeof fam) == 0, "autobind 44");
    auto_len = sizeof auto_addr;
    must(getsockname(44, (struct sockaddr*)&auto_addr, &auto_len) == 0 && auto_len > sizeof(sa_family_t),
         "autobind name");
    sock_at(SOCK_STREAM, 45);

    test_sync_t started;
    test_sync_init(&started);
    pid_t child = fork();
    if (child == 0) {
        for (int fd = 20; fd <= 45; ++fd) close(fd);
        sock_at(SOCK_STREAM, 30);
        must(bind(30, (struct sockaddr*)&cl_addr, cl_len) == 0 && connect(30, (struct sockaddr*)&srv_addr, srv_len) == 0,
             "child: connect 30");
        static unsigned char down[DOWN_BYTES];
        test_fill(down, sizeof down, 1);
        must(write(30, down, sizeof down) == (ssize_t)sizeof down, "child: write 30");
        sock_at(SOCK_STREAM, 31);
        must(connect(31, (struct sockaddr*)&srv_addr, srv_len) == 0, "child: connect 31");
        sock_at(SOCK_DGRAM, 41);
        must(bind(41, (struct sockaddr*)&dg_abs, dg_abs_len) == 0 && connect(41, (struct sockaddr*)&dg_addr, dg_len) == 0,
             "child: connect 41");
        send_message(41, 1000, 41);
        send_message(41, 1, 42);
        test_sync_signal(&started);
        test_wait_check();

        CHECK(name_is(30, 0, &cl_addr, cl_len) && name_is(30, 1, &srv_addr, srv_len),
              "child: fd 30's names changed");
        static unsigned char up[UP_BYTES];
        CHECK(test_read_all(30, up, UP_BYTES) && test_verify(up, UP_BYTES, 2) < 0,
              "child: the data queued for fd 30 changed");
        CHECK(name_is(31, 1, &srv_addr, srv_len) && unnamed(31, 0), "child: fd 31's names changed");
        char pend[4];
        CHECK(test_read_all(31, pend, 4) && memcmp(pend, "pend", 4) == 0,
              "child: what the parent sent on the pending connection it accepted after restore did not arrive");
        CHECK(name_is(41, 0, &dg_abs, dg_abs_len) && name_is(41, 1, &dg_addr, dg_len), "child: fd 41's names changed");
        send_message(41, 9, 99);
        test_child_exit();
    }
    test_sync_wait(&started);
    a = accept(20, NULL, NULL);
    must(a >= 0 && dup2(a, 22) == 22, "accept 22");
    close(a);
    static unsigned char upbuf[UP_BYTES];
    test_fill(upbuf, sizeof upbuf, 2);
    must(write(22, upbuf, sizeof upbuf) == (ssize_t)sizeof upbuf, "write 22");
    sendto_message(44, 33, 44, dg_path);
    struct sock_filter keep200 = BPF_STMT(BPF_RET | BPF_K, 200);
    test_attach_filter(40, &keep200, 1);

    test_ready();
    test_wait_check();

    static unsigned char buf[DOWN_BYTES];
    if (test_corrupt(1)) (void)!read(22, buf, 1);
    if (test_corrupt(2)) recv(40, buf, sizeof buf, MSG_DONTWAIT);
    if (test_corrupt(3)) chmod(srv_path, 0600);
    if (test_corrupt(4)) close(accept(20, NULL, NULL));
    if (test_corrupt(5)) recv(43, buf, sizeof buf, MSG_DONTWAIT);
    if (test_corrupt(6)) recv(23, buf, sizeof buf, MSG_DONTWAIT);
    if (test_corrupt(7)) test_detach_filter(40);
    CHECK(test_filter_is(40, &keep200, 1), "fd 40: not its socket filter");

    struct stat st;
    CHECK(name_is(20, 0, &srv_addr, srv_len), "fd 20: not bound to %s", srv_path);
    CHECK(stat(srv_path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 07777) == 0640,
          "%s: not a socket file of mode 0640", srv_path);
    CHECK(name_is(21, 0, &sp_addr, sp_len), "fd 21: not bound to its abstract name");
    CHECK(name_is(22, 0, &srv_addr, srv_len) && name_is(22, 1, &cl_addr, cl_len),
          "fd 22: the accepted end's names changed");
    CHECK(test_read_all(22, buf, DOWN_BYTES) && test_verify(buf, DOWN_BYTES, 1) < 0, "the data queued for fd 22 changed");
    CHECK(name_is(23, 0, &sp_addr, sp_len) && unnamed(23, 1), "fd 23: the accepted end's names changed");
    CHECK(expect_message(23, 100, 60, NULL, 0) && expect_message(23, 2000, 61, NULL, 0),
          "fd 23: the queued packets changed");
    CHECK(recv(23, buf, 1, MSG_DONTWAIT) == 0, "fd 23: no end of file after the packets");
    CHECK(expect_message(26, 300, 62, NULL, 0), "fd 26: the queued packet changed");
    CHECK(name_is(26, 1, &sp_addr, sp_len), "fd 26: its peer's name changed");

    CHECK(name_is(40, 0, &dg_addr, dg_len), "fd 40: not bound to %s", dg_path);
    CHECK(expect_message(40, 500, 40, &dg_addr, 0), "fd 40: the message from the unnamed 42 changed");
    CHECK(expect_message(40, 1000, 41, &dg_abs, dg_abs_len) && expect_message(40, 1, 42, &dg_abs, dg_abs_len),
          "fd 40: the messages from the child's 41 changed");
    CHECK(expect_message(40, 33, 44, &auto_addr, auto_len), "fd 40: the message from the autobound 44 changed");
    CHECK(recv(40, buf, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "fd 40: more messages than queued");
    CHECK(name_is(43, 0, &gone_addr, gone_len), "fd 43: not bound to the deleted %s", gone_path);
    CHECK(stat(gone_path, &st) != 0 && errno == ENOENT, "%s is back", gone_path);
    CHECK(expect_message(43, 77, 43, NULL, 0), "fd 43: the queued message changed");
    CHECK(name_is(44, 0, &auto_addr, auto_len), "fd 44: its autobind name changed");
    int type = 0;
    socklen_t tl = sizeof type;
    CHECK(unnamed(45, 0) && getsockopt(45, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_STREAM &&
              getpeername(45, (struct sockaddr*)&st, &tl) != 0 && errno == ENOTCONN,
          "fd 45: not an unbound, unconnected stream socket");

    /* The pending connection, accepted only now; nothing else was pending. */
    fcntl(20, F_SETFL, O_NONBLOCK);
    fcntl(21, F_SETFL, O_NONBLOCK);
    int p = accept4(20, NULL, NULL, SOCK_NONBLOCK);
    CHECK(p >= 0 && unnamed(p, 1) && name_is(p, 0, &srv_addr, srv_len), "fd 20: the pending connection is gone");
    CHECK(p < 0 || write(p, "pend", 4) == 4, "cannot write on the pending connection");
    CHECK(accept4(20, NULL, NULL, SOCK_NONBLOCK) < 0 && errno == EAGAIN, "fd 20: more connections pending than one");
    kill(child, SIGTERM);
    test_expect_child_ok(child, "child");
    CHECK(expect_message(40, 9, 99, &dg_abs, dg_abs_len), "fd 40: what the child's 41 sent after restore");

    /* New connections after restore, to the path and to the abstract name. */
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(connect(c, (struct sockaddr*)&srv_addr, srv_len) == 0, "connecting to %s after restore: %s", srv_path,
          strerror(errno));
    int s = accept4(20, NULL, NULL, SOCK_NONBLOCK);
    CHECK(s >= 0 && write(c, "n", 1) == 1 && test_read_all(s, buf, 1) && buf[0] == 'n',
          "a connection to %s after restore", srv_path);
    int c2 = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    CHECK(connect(c2, (struct sockaddr*)&sp_addr, sp_len) == 0 && accept4(21, NULL, NULL, SOCK_NONBLOCK) >= 0,
          "a connection to the abstract name after restore");
    return test_finish();
}
