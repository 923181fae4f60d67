/* Half-closed TCP connections across a dump and restore (dump and restore --tcp-established,
 * run_engine_test.py --peer tcp_halfclose_peer): one connection in each state to the peer
 * outside the tree, every byte of each stream checked both ways (tcp_stream.h) and each end
 * of stream seen where it belongs, once, by the right side.
 *   fd 20  control (ESTABLISHED): one byte at a time, to keep the two scripts in step
 *   fd 21  FIN_WAIT2: the tree sent M_TREE and its FIN (acknowledged); the peer answered
 *          N_PEER, half of it left unread; after restore the rest, N_PEER more, the peer's end
 *   fd 22  CLOSE_WAIT, v4-mapped AF_INET6: the peer sent N_PEER and its FIN, half of it left
 *          unread (reads give the rest, then the end); the tree sent M_TREE; after restore
 *          M_TREE more and the tree's FIN
 *   fd 23  LAST_ACK: the peer's N_PEER and FIN all read; the tree's M_TREE and FIN not
 *          acknowledged (the peer drops them until "go")
 *   fd 24  FIN_WAIT1: the tree's M_TREE and FIN not acknowledged; after restore the peer
 *          reads them, sends N_PEER and its FIN
 *   fd 25  CLOSING: the tree's M_TREE and FIN not acknowledged, the peer's FIN received
 * Built with HALFCLOSE_V6 (tcp_halfclose_v6): the same, every connection over IPv6 to [::1]
 * (the peer's FIN and acknowledgment are IPv6 segments at restore).
 * A socket the tree holds whose connection reached TIME_WAIT is in state CLOSE, refused by
 * the dump (not tested here). */
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>

#include "tcp_halfclose_common.h"
#include "testlib.h"

static stream_t s[NCONN];

static int connect_to(int family, const char* addr, int port) {
    int s = stream_connect(family, addr, port);
    if (s < 0) {
        test_fail("connect to %s port %d: %s", addr, port, strerror(errno));
        exit(test_finish());
    }
    return s;
}

static int state_of(int i) {
    struct tcp_info info;
    socklen_t l = sizeof info;
    if (getsockopt(s[i].fd, IPPROTO_TCP, TCP_INFO, &info, &l) != 0) return -1;
    return info.tcpi_state;
}

/* Until connection i is in state want (it is there at once or within a round trip). */
static void wait_state(int i, int want) {
    int now = -1;
    for (int t = 0; t < WAIT_MS; ++t) {
        if ((now = state_of(i)) == want) return;
        usleep(1000);
    }
    test_fail("%s: state %d, not %d", conn_names[i], now, want);
}

#define TRY(i, call)                                                                  \
    do {                                                                              \
        if ((call) != 0) test_fail("%s: %s: %s", conn_names[i], #call, s[i].error[0] ? s[i].error : strerror(errno)); \
    } while (0)

static const int states[NCONN] = {TCP_ESTABLISHED, TCP_FIN_WAIT2, TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_FIN_WAIT1,
                                  TCP_CLOSING};

int main(int argc, char** argv) {
    test_init(argc, argv, 2);
    const char* port_text = getenv("CKPT_TEST_PEER_PORT");
    if (!port_text) {
        test_fail("CKPT_TEST_PEER_PORT is not set (run with run_engine_test.py --peer)");
        return test_finish();
    }
    int port = atoi(port_text);
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < NCONN; ++i) {
#ifdef HALFCLOSE_V6
        int fd = connect_to(AF_INET6, "::1", port);
#else
        int fd = i == CW ? connect_to(AF_INET6, "::ffff:127.0.0.1", port) : connect_to(AF_INET, "127.0.0.1", port);
#endif
        if (dup3(fd, 20 + i, O_CLOEXEC) != 20 + i) test_fail("dup3: %s", strerror(errno));
        close(fd);
        if (stream_init(&s[i], 20 + i) != 0) test_fail("%s: %s", conn_names[i], s[i].error);
    }
    int k = s[CONTROL].fd;
    TRY(FW2, send_n(&s[FW2], M_TREE));
    TRY(FW2, shutdown(s[FW2].fd, SHUT_WR));
    TRY(FW2, recv_n(&s[FW2], N_PEER / 2, 0));
    TRY(CW, send_n(&s[CW], M_TREE));
    TRY(CW, recv_n(&s[CW], N_PEER / 2, 0));
    TRY(LA, recv_n(&s[LA], N_PEER, 1));
    TRY(LA, ctl_send(k, 'a'));
    TRY(LA, ctl_recv(k, 'A'));
    TRY(LA, send_n(&s[LA], M_TREE));
    TRY(LA, shutdown(s[LA].fd, SHUT_WR));
    TRY(CL, ctl_recv(k, 'B'));
    TRY(FW1, send_n(&s[FW1], M_TREE));
    TRY(FW1, shutdown(s[FW1].fd, SHUT_WR));
    TRY(CL, send_n(&s[CL], M_TREE));
    TRY(CL, shutdown(s[CL].fd, SHUT_WR));
    TRY(CL, ctl_send(k, 'c'));
    TRY(CONTROL, ctl_recv(k, 'R'));
    for (int i = 0; i < NCONN; ++i) wait_state(i, states[i]);
    /* What stays queued: half of the peer's bytes on FW2 and CW (and CW's end after them). */
    for (int i = FW2; i <= CW; ++i) {
        int inq = -1;
        for (int t = 0; t < WAIT_MS && inq != N_PEER / 2; ++t) {
            ioctl(s[i].fd, FIONREAD, &inq);
            if (inq != N_PEER / 2) usleep(1000);
        }
        CHECK(inq == N_PEER / 2, "%s: %d bytes queued before the dump, not %d", conn_names[i], inq, N_PEER / 2);
    }

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) {
        char c;
        recv(s[CW].fd, &c, 1, MSG_DONTWAIT); /* a byte lost */
    }
    if (test_corrupt(2)) shutdown(s[CW].fd, SHUT_WR); /* CLOSE_WAIT's FIN early: LAST_ACK */
    for (int i = 0; i < NCONN; ++i) {
        int now = state_of(i);
        CHECK(now == states[i], "%s: state %d after restore, not %d", conn_names[i], now, states[i]);
    }
    TRY(CONTROL, ctl_send(k, 'g'));
    TRY(FW2, recv_n(&s[FW2], N_PEER / 2 + N_PEER, 1));
    TRY(CW, recv_n(&s[CW], N_PEER / 2, 1));
    TRY(CW, send_n(&s[CW], M_TREE));
    TRY(CW, shutdown(s[CW].fd, SHUT_WR));
    TRY(FW1, recv_n(&s[FW1], N_PEER, 1));
    /* Every connection ends: the last acknowledgments arrive (no socket is left holding one). */
    for (int i = FW2; i < NCONN; ++i) wait_state(i, TCP_CLOSE);
    TRY(CONTROL, ctl_recv(k, 'e'));
    TRY(CONTROL, shutdown(k, SHUT_WR));
    char c;
    struct pollfd p = {k, POLLIN, 0};
    CHECK(poll(&p, 1, WAIT_MS) == 1 && recv(k, &c, 1, 0) == 0, "control: no end of stream from the peer");
    for (int i = 0; i < NCONN; ++i) close(s[i].fd);
    return test_finish();
}
