/* The peer outside the tree for tcp_halfclose (run_engine_test.py --peer): listens on
 * 127.0.0.1 ([::1] built with HALFCLOSE_V6), prints its port, accepts the tree's six connections in order and plays its side
 * of each (tcp_halfclose.c tells the script). It checks every byte and every end of stream,
 * and exits 0 only if all of them came right: a reset, a lost, doubled or changed byte, an
 * end of stream early, late or missing is a failure on stderr. Where the tree's FIN must stay
 * unacknowledged (LAST_ACK, FIN_WAIT1, CLOSING) it drops every segment the tree sends on that
 * connection (a filter on its socket: a lossy network) until the tree, restored, says "go".
 * It plays once per run of the tree (the corrupt mode runs it once per corruption) until
 * SIGTERM asks for its verdict. */
#include <linux/filter.h>
#include <linux/sockios.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>

#include "tcp_halfclose_common.h"

static stream_t s[NCONN];
static int failures;

static void fail(int i, const char* what) {
    fprintf(stderr, "tcp_halfclose_peer: FAIL: %s: %s\n", conn_names[i], s[i].error[0] ? s[i].error : what);
    failures++;
}

static void drop_all(int i, int on) {
    struct sock_filter drop = BPF_STMT(BPF_RET | BPF_K, 0);
    struct sock_fprog prog = {1, &drop};
    int zero = 0;
    int r = on ? setsockopt(s[i].fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog)
               : setsockopt(s[i].fd, SOL_SOCKET, SO_DETACH_FILTER, &zero, sizeof zero);
    if (r != 0) fail(i, on ? "SO_ATTACH_FILTER" : "SO_DETACH_FILTER");
}

/* Until what this end sent (its FIN too) is acknowledged. */
static void wait_acked(int i) {
    for (int t = 0; t < WAIT_MS; ++t) {
        int outq = -1;
        if (ioctl(s[i].fd, SIOCOUTQ, &outq) == 0 && outq == 0) return;
        usleep(1000);
    }
    fail(i, "what it sent is not acknowledged");
}

#define TRY(i, call)                \
    do {                            \
        if ((call) != 0) fail(i, #call); \
    } while (0)

/* One run of the tree: its six connections, in order. */
static void session(int l) {
    for (int i = 0; i < NCONN; ++i) {
        struct pollfd p = {l, POLLIN, 0};
        int c = poll(&p, 1, WAIT_MS) == 1 ? accept4(l, NULL, NULL, SOCK_CLOEXEC) : -1;
        if (c < 0 || stream_init(&s[i], c) != 0) {
            fprintf(stderr, "tcp_halfclose_peer: FAIL: no connection %s\n", conn_names[i]);
            failures++;
            for (int j = 0; j < i; ++j) close(s[j].fd);
            return;
        }
    }
    int k = s[CONTROL].fd;
    /* Before the dump. FIN_WAIT2: the tree's data and FIN, then ours (not all read). */
    TRY(FW2, recv_n(&s[FW2], M_TREE, 1));
    TRY(FW2, send_n(&s[FW2], N_PEER));
    /* CLOSE_WAIT: ours and our FIN; the tree's data. */
    TRY(CW, send_n(&s[CW], N_PEER));
    TRY(CW, shutdown(s[CW].fd, SHUT_WR));
    TRY(CW, recv_n(&s[CW], M_TREE, 0));
    /* LAST_ACK: ours and our FIN, acknowledged; then deaf to the tree's answer and FIN. */
    TRY(LA, send_n(&s[LA], N_PEER));
    TRY(LA, shutdown(s[LA].fd, SHUT_WR));
    wait_acked(LA);
    TRY(LA, ctl_recv(k, 'a'));  /* the tree read all of it and the end */
    drop_all(LA, 1);
    TRY(LA, ctl_send(k, 'A'));
    /* FIN_WAIT1, CLOSING: deaf from the start; for CLOSING our FIN once the tree sent its own. */
    drop_all(FW1, 1);
    drop_all(CL, 1);
    TRY(CL, ctl_send(k, 'B'));
    TRY(CL, ctl_recv(k, 'c'));
    TRY(CL, shutdown(s[CL].fd, SHUT_WR));
    TRY(CONTROL, ctl_send(k, 'R'));

    /* The tree, restored (or never dumped), says go. */
    TRY(CONTROL, ctl_recv(k, 'g'));
    drop_all(LA, 0);
    drop_all(FW1, 0);
    drop_all(CL, 0);
    TRY(FW2, send_n(&s[FW2], N_PEER));
    TRY(FW2, shutdown(s[FW2].fd, SHUT_WR));
    TRY(CW, recv_n(&s[CW], M_TREE, 1));
    TRY(LA, recv_n(&s[LA], M_TREE, 1));
    TRY(FW1, recv_n(&s[FW1], M_TREE, 1));
    TRY(FW1, send_n(&s[FW1], N_PEER));
    TRY(FW1, shutdown(s[FW1].fd, SHUT_WR));
    TRY(CL, recv_n(&s[CL], M_TREE, 1));
    for (int i = 1; i < NCONN; ++i) wait_acked(i);
    TRY(CONTROL, ctl_send(k, 'e'));
    char c;
    struct pollfd p = {k, POLLIN, 0};
    if (poll(&p, 1, WAIT_MS) != 1 || recv(k, &c, 1, 0) != 0) fail(CONTROL, "no end of the control connection");
    for (int i = 0; i < NCONN; ++i) close(s[i].fd);
}

int main(void) {
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, NULL); /* the verdict is given between runs of the tree */
    int sig = signalfd(-1, &term, SFD_CLOEXEC);
    signal(SIGPIPE, SIG_IGN);
#ifdef HALFCLOSE_V6
    int l = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
#else
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
#endif
    socklen_t al = sizeof a;
    if (sig < 0 || l < 0 || bind(l, (struct sockaddr*)&a, sizeof a) != 0 || listen(l, 16) != 0 ||
        getsockname(l, (struct sockaddr*)&a, &al) != 0) {
        perror("tcp_halfclose_peer: listen");
        return 2;
    }
#ifdef HALFCLOSE_V6
    printf("%d\n", ntohs(a.sin6_port));
#else
    printf("%d\n", ntohs(a.sin_port));
#endif
    fflush(stdout);
    /* A run of the tree per connection burst (the corrupt mode runs it once per corruption),
     * until SIGTERM asks for the verdict. */
    int runs = 0;
    for (;;) {
        struct pollfd p[2] = {{l, POLLIN, 0}, {sig, POLLIN, 0}};
        if (poll(p, 2, -1) < 0 && errno != EINTR) return 2;
        if (p[1].revents) break;
        if (p[0].revents) {
            session(l);
            runs++;
        }
    }
    if (!runs) fprintf(stderr, "tcp_halfclose_peer: FAIL: the tree never connected\n");
    if (runs && !failures) fprintf(stderr, "tcp_halfclose_peer: every byte and end of stream right\n");
    return failures || !runs ? 1 : 0;
}
