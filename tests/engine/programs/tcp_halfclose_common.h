/* What tcp_halfclose (the tree) and tcp_halfclose_peer (outside it) share: the connections in
 * the order the tree makes them (the peer accepts them in that order), the sizes of what each
 * side sends, and blocking, checked stream helpers (tcp_stream.h). */
#ifndef CKPT_ENGINE_TCP_HALFCLOSE_COMMON_H
#define CKPT_ENGINE_TCP_HALFCLOSE_COMMON_H

#include <poll.h>

#include "tcp_stream.h"

enum { CONTROL, FW2, CW, LA, FW1, CL, NCONN };
/* Built with HALFCLOSE_V6 (tcp_halfclose_v6, tcp_halfclose_peer6): every connection over IPv6
 * proper, to [::1]; otherwise over IPv4 to 127.0.0.1, CLOSE_WAIT's as v4-mapped AF_INET6. */
#ifdef HALFCLOSE_V6
static const char* const conn_names[NCONN] = {"control", "FIN_WAIT2", "CLOSE_WAIT", "LAST_ACK", "FIN_WAIT1",
                                              "CLOSING"};
#else
static const char* const conn_names[NCONN] = {"control", "FIN_WAIT2", "CLOSE_WAIT (v4-mapped)", "LAST_ACK", "FIN_WAIT1",
                                              "CLOSING"};
#endif
#define N_PEER 40000 /* what the peer sends on each connection before the dump */
#define M_TREE 20000 /* what the tree sends (within the peer's first window: all of it leaves) */
#define WAIT_MS 60000

/* Sends n bytes of the stream (blocking). 0 or -1 (recorded in s->error). */
static inline int send_n(stream_t* s, uint64_t n) {
    uint64_t to = s->sent + n;
    while (s->sent < to) {
        struct pollfd p = {s->fd, POLLOUT, 0};
        if (poll(&p, 1, WAIT_MS) != 1) {
            snprintf(s->error, sizeof s->error, "port %u: send stalled after %llu bytes", s->out_seed >> 16,
                     (unsigned long long)s->sent);
            return -1;
        }
        if (stream_send(s, to - s->sent, MSG_DONTWAIT) < 0) return -1;
    }
    return 0;
}

/* Receives exactly n bytes of the stream, then (eof) the end of the stream, twice: nothing
 * follows it. 0 or -1 (recorded). */
static inline int recv_n(stream_t* s, uint64_t n, int eof) {
    uint64_t to = s->recvd + n;
    for (;;) {
        if (s->recvd == to && !eof) return 0;
        struct pollfd p = {s->fd, POLLIN, 0};
        if (poll(&p, 1, WAIT_MS) != 1) {
            snprintf(s->error, sizeof s->error, "port %u: nothing received for %d s after %llu bytes%s",
                     s->in_seed & 0xffff, WAIT_MS / 1000, (unsigned long long)s->recvd,
                     s->recvd == to ? " (waiting for the end of stream)" : "");
            return -1;
        }
        ssize_t r = stream_recv(s, s->recvd < to ? to - s->recvd : 1, MSG_DONTWAIT);
        if (r == -2) continue;
        if (r == -1) return -1;
        if (r == 0) {
            if (s->recvd != to || !eof) {
                snprintf(s->error, sizeof s->error, "port %u: end of stream after %llu bytes, %llu expected",
                         s->in_seed & 0xffff, (unsigned long long)s->recvd, (unsigned long long)to);
                return -1;
            }
            char c;
            ssize_t again = recv(s->fd, &c, 1, MSG_DONTWAIT);
            if (again != 0) {
                snprintf(s->error, sizeof s->error, "port %u: %s after the end of stream", s->in_seed & 0xffff,
                         again > 0 ? "data" : strerror(errno));
                return -1;
            }
            return 0;
        }
        if (s->recvd > to) {
            snprintf(s->error, sizeof s->error, "port %u: more than %llu bytes", s->in_seed & 0xffff,
                     (unsigned long long)to);
            return -1;
        }
    }
}

/* One byte on the control connection (not part of its stream: the control carries only these). */
static inline int ctl_send(int fd, char c) { return send(fd, &c, 1, MSG_NOSIGNAL) == 1 ? 0 : -1; }
static inline int ctl_recv(int fd, char want) {
    struct pollfd p = {fd, POLLIN, 0};
    char c = 0;
    if (poll(&p, 1, WAIT_MS) != 1 || recv(fd, &c, 1, 0) != 1) return -1;
    return c == want ? 0 : -1;
}

#endif
