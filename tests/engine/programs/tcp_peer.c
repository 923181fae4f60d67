/* The peer outside the tree for tcp_established (run_engine_test.py --peer): listens on
 * 127.0.0.1, prints its port on stdout, and echoes every connection (tcp_stream.h): each byte
 * received is checked and answered with one byte of its own stream. On SIGTERM it waits for
 * its connections to end (the program closes them once it has checked everything) and exits
 * 0 only if every connection ended with a clean end of stream, every byte right and answered:
 * a reset, a lost, doubled or changed byte, a connection left open, is a failure on stderr. */
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

#include "tcp_stream.h"

#define MAX_CONNS 64

static volatile sig_atomic_t ending;
static void on_term(int sig) {
    (void)sig;
    ending = 1;
}

typedef struct {
    stream_t s;
    uint64_t pending; /* received, not answered yet */
    int open;
} conn_t;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

int main(void) {
    static conn_t conns[MAX_CONNS];
    int nconns = 0, failures = 0;
    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr*)&a, sizeof a) != 0 || listen(l, 16) != 0 ||
        getsockname(l, (struct sockaddr*)&a, &al) != 0) {
        perror("tcp_peer: listen");
        return 2;
    }
    printf("%d\n", ntohs(a.sin_port));
    fflush(stdout);

    double end_by = 0;
    for (;;) {
        int open = 0;
        for (int i = 0; i < nconns; ++i) open += conns[i].open;
        if (ending) {
            if (end_by == 0) end_by = now() + 10;
            if (open == 0 || now() > end_by) break;
        }
        struct pollfd p[MAX_CONNS + 1];
        int idx[MAX_CONNS + 1], n = 0;
        p[n] = (struct pollfd){l, POLLIN, 0};
        idx[n++] = -1;
        for (int i = 0; i < nconns; ++i)
            if (conns[i].open) {
                p[n] = (struct pollfd){conns[i].s.fd, (short)(POLLIN | (conns[i].pending ? POLLOUT : 0)), 0};
                idx[n++] = i;
            }
        if (poll(p, (nfds_t)n, ending ? 100 : 1000) < 0 && errno != EINTR) {
            perror("tcp_peer: poll");
            return 2;
        }
        for (int k = 0; k < n; ++k) {
            if (!p[k].revents) continue;
            if (idx[k] < 0) {
                int c = accept4(l, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (c < 0) continue;
                if (nconns == MAX_CONNS) {
                    fprintf(stderr, "tcp_peer: too many connections\n");
                    return 2;
                }
                conn_t* cn = &conns[nconns++];
                cn->open = 1;
                cn->pending = 0;
                if (stream_init(&cn->s, c) != 0) {
                    fprintf(stderr, "tcp_peer: %s\n", cn->s.error);
                    failures++;
                }
                continue;
            }
            conn_t* cn = &conns[idx[k]];
            for (;;) {
                ssize_t r = stream_recv(&cn->s, 16384, MSG_DONTWAIT);
                if (r > 0) {
                    cn->pending += (uint64_t)r;
                    continue;
                }
                if (r == 0) {
                    if (cn->pending)
                        snprintf(cn->s.error, sizeof cn->s.error, "port %u: end of stream with %llu bytes unanswered",
                                 cn->s.in_seed & 0xffff, (unsigned long long)cn->pending);
                    cn->open = 0;
                } else if (r == -1) {
                    cn->open = 0;
                }
                break;
            }
            while (cn->open && cn->pending) {
                ssize_t w = stream_send(&cn->s, cn->pending, MSG_DONTWAIT);
                if (w <= 0) {
                    if (w < 0) cn->open = 0;
                    break;
                }
                cn->pending -= (uint64_t)w;
            }
            if (!cn->open) {
                if (cn->s.error[0]) {
                    fprintf(stderr, "tcp_peer: FAIL: %s\n", cn->s.error);
                    failures++;
                } else {
                    fprintf(stderr, "tcp_peer: port %u: %llu bytes each way, ended cleanly\n", cn->s.in_seed & 0xffff,
                            (unsigned long long)cn->s.recvd);
                }
                close(cn->s.fd);
            }
        }
    }
    for (int i = 0; i < nconns; ++i)
        if (conns[i].open) {
            fprintf(stderr, "tcp_peer: FAIL: port %u: still open at the end (%llu bytes received)\n",
                    conns[i].s.in_seed & 0xffff, (unsigned long long)conns[i].s.recvd);
            failures++;
        }
    return failures ? 1 : 0;
}
