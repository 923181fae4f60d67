/* Checked TCP byte streams for tcp_established and tcp_peer.
 *
 * Each direction of a connection carries its own deterministic stream: byte i of what the end
 * with local port L sends to port P is stream_byte((L << 16) | P, i). The receiver checks
 * every byte at its offset, so a byte lost, doubled or changed anywhere is found. An echoer
 * answers every byte it receives with one byte of its own stream: it sends only when it has
 * received, so a connection whose driver has stopped sending, and has received the whole
 * answer, is quiet (nothing in flight either way). */
#ifndef CKPT_ENGINE_TCP_STREAM_H
#define CKPT_ENGINE_TCP_STREAM_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static inline uint8_t stream_byte(uint32_t seed, uint64_t i) {
    uint64_t z = (i >> 3) + ((uint64_t)seed << 32) + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (uint8_t)(z >> (8 * (i & 7)));
}

typedef struct {
    int fd;
    uint32_t out_seed, in_seed;
    uint64_t sent, recvd;
    char error[160]; /* the first problem seen ("" while none) */
} stream_t;

static inline int stream_port(int fd, int peer) {
    struct sockaddr_storage ss;
    socklen_t l = sizeof ss;
    if ((peer ? getpeername(fd, (struct sockaddr*)&ss, &l) : getsockname(fd, (struct sockaddr*)&ss, &l)) != 0) return -1;
    return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in*)&ss)->sin_port : ((struct sockaddr_in6*)&ss)->sin6_port);
}

static inline int stream_init(stream_t* s, int fd) {
    memset(s, 0, sizeof *s);
    s->fd = fd;
    int local = stream_port(fd, 0), peer = stream_port(fd, 1);
    if (local < 0 || peer < 0) {
        snprintf(s->error, sizeof s->error, "fd %d: getsockname/getpeername: %s", fd, strerror(errno));
        return -1;
    }
    s->out_seed = ((uint32_t)local << 16) | (uint32_t)peer;
    s->in_seed = ((uint32_t)peer << 16) | (uint32_t)local;
    return 0;
}

/* A TCP connection to addr (AF_INET or AF_INET6 text) and port; -1 (errno) when it fails. */
static inline int stream_connect(int family, const char* addr, int port) {
    int s = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in* a = (struct sockaddr_in*)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, addr, &a->sin_addr);
        len = sizeof *a;
    } else {
        struct sockaddr_in6* a = (struct sockaddr_in6*)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, addr, &a->sin6_addr);
        len = sizeof *a;
    }
    if (s < 0 || connect(s, (struct sockaddr*)&ss, len) != 0) {
        int err = errno;
        if (s >= 0) close(s);
        errno = err;
        return -1;
    }
    return s;
}

/* Sends up to n bytes of the stream (flags: MSG_DONTWAIT or 0). Returns the count, 0 when
 * the socket's buffer is full, -1 on an error (recorded). */
static inline ssize_t stream_send(stream_t* s, size_t n, int flags) {
    uint8_t buf[16384];
    if (n > sizeof buf) n = sizeof buf;
    for (size_t i = 0; i < n; ++i) buf[i] = stream_byte(s->out_seed, s->sent + i);
    ssize_t r;
    do r = send(s->fd, buf, n, flags | MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno == EAGAIN) return 0;
    if (r < 0) {
        if (!s->error[0])
            snprintf(s->error, sizeof s->error, "port %u: send after %llu bytes: %s", s->out_seed >> 16,
                     (unsigned long long)s->sent, strerror(errno));
        return -1;
    }
    s->sent += (uint64_t)r;
    return r;
}

/* Receives what is there (up to max) and checks it. Returns the count, -2 when nothing is
 * there (MSG_DONTWAIT), 0 at end of stream, -1 on an error or a wrong byte (recorded). */
static inline ssize_t stream_recv(stream_t* s, size_t max, int flags) {
    uint8_t buf[16384];
    if (max > sizeof buf) max = sizeof buf;
    ssize_t r;
    do r = recv(s->fd, buf, max, flags);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno == EAGAIN) return -2;
    if (r < 0) {
        if (!s->error[0])
            snprintf(s->error, sizeof s->error, "port %u: recv after %llu bytes: %s", s->in_seed & 0xffff,
                     (unsigned long long)s->recvd, strerror(errno));
        return -1;
    }
    for (ssize_t i = 0; i < r; ++i)
        if (buf[i] != stream_byte(s->in_seed, s->recvd + (uint64_t)i)) {
            if (!s->error[0])
                snprintf(s->error, sizeof s->error, "port %u: byte %llu of the stream received is wrong",
                         s->in_seed & 0xffff, (unsigned long long)(s->recvd + (uint64_t)i));
            return -1;
        }
    s->recvd += (uint64_t)r;
    return r;
}

#endif
