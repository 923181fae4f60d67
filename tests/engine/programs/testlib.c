/* Shared helper of the engine conformance programs: see testlib.h for the protocol. */
#include "testlib.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/filter.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char result_path[PATH_MAX];
static char data_dir[PATH_MAX];
static int corrupt_point; /* 0: no corruption selected */
static int fail_count;
static char first_failure[512];
static volatile sig_atomic_t check_requested;

static void on_check_signal(int sig) {
    (void)sig;
    check_requested = 1;
}

static void die(const char* what) {
    fprintf(stderr, "testlib: %s: %s\n", what, strerror(errno));
    exit(2);
}

void test_init(int argc, char** argv, int corruptions) {
    if (argc == 2 && strcmp(argv[1], "--corruptions") == 0) {
        printf("%d\n", corruptions);
        exit(0);
    }
    if (argc < 2) {
        fprintf(stderr, "usage: %s RESULT_FILE | --corruptions\n", argv[0]);
        exit(2);
    }
    snprintf(result_path, sizeof result_path, "%s", argv[1]);
    snprintf(data_dir, sizeof data_dir, "%s.data", argv[1]);
    if (mkdir(data_dir, 0777) != 0 && errno != EEXIST) die("mkdir data dir");

    const char* corrupt = getenv("CKPT_TEST_CORRUPT");
    if (corrupt && *corrupt) {
        corrupt_point = atoi(corrupt);
        if (corrupt_point < 1 || corrupt_point > corruptions) {
            fprintf(stderr, "testlib: no corruption point %s (have %d)\n", corrupt, corruptions);
            exit(2);
        }
    }

    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &term, NULL) != 0) die("block SIGTERM");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_check_signal;
    if (sigaction(SIGTERM, &sa, NULL) != 0) die("sigaction SIGTERM");
}

const char* test_data_dir(void) { return data_dir; }

void test_data_path(char* buf, size_t size, const char* name) {
    snprintf(buf, size, "%s/%s", data_dir, name);
}

const char* test_result_path(void) { return result_path; }

void test_set_result_path(const char* path) {
    snprintf(result_path, sizeof result_path, "%s", path);
}

void test_ready(void) {
    char ready[PATH_MAX + 8];
    snprintf(ready, sizeof ready, "%s.ready", result_path);
    int fd = open(ready, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) die("create ready file");
    close(fd);
}

void test_wait_check(void) {
    sigset_t mask;
    sigprocmask(SIG_SETMASK, NULL, &mask);
    sigdelset(&mask, SIGTERM);
    while (!check_requested) sigsuspend(&mask);
    check_requested = 0;
}

int test_corrupt(int n) { return corrupt_point == n; }

void test_fail(const char* fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (fail_count++ == 0) snprintf(first_failure, sizeof first_failure, "%s", msg);
    fprintf(stderr, "FAIL[pid %d]: %s\n", (int)getpid(), msg);
}

int test_failed(void) { return fail_count != 0; }

int test_finish(void) {
    char line[700];
    int len;
    if (fail_count == 0)
        len = snprintf(line, sizeof line, "PASS\n");
    else if (fail_count == 1)
        len = snprintf(line, sizeof line, "FAIL: %s\n", first_failure);
    else
        len = snprintf(line, sizeof line, "FAIL: %s (and %d more, see the log)\n", first_failure,
                       fail_count - 1);
    int fd = open(result_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) die("create result file");
    if (write(fd, line, (size_t)len) != len) die("write result file");
    close(fd);
    return fail_count == 0 ? 0 : 1;
}

void test_child_exit(void) { _exit(fail_count == 0 ? 0 : 1); }

void test_expect_child_ok(pid_t pid, const char* role) {
    int status;
    pid_t got;
    do got = waitpid(pid, &status, 0);
    while (got < 0 && errno == EINTR);
    if (got != pid)
        test_fail("waitpid(%s, pid %d): %s", role, (int)pid, strerror(errno));
    else if (WIFSIGNALED(status))
        test_fail("%s (pid %d) was killed by signal %d", role, (int)pid, WTERMSIG(status));
    else if (WEXITSTATUS(status) != 0)
        test_fail("%s (pid %d) failed (exit %d, reasons in the log)", role, (int)pid,
                  WEXITSTATUS(status));
}

void test_sync_init(test_sync_t* s) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) die("pipe2");
    s->rd = fds[0];
    s->wr = fds[1];
}

void test_sync_signal(test_sync_t* s) {
    close(s->rd);
    char c = 1;
    if (write(s->wr, &c, 1) != 1) die("sync write");
    close(s->wr);
}

void test_sync_wait(test_sync_t* s) {
    close(s->wr);
    char c;
    ssize_t n;
    do n = read(s->rd, &c, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1) {
        fprintf(stderr, "testlib: a child died during set-up\n");
        exit(2);
    }
    close(s->rd);
}

uint64_t test_rand_next(uint64_t* state) {
    /* splitmix64: fast, and every seed gives a different stream */
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void test_fill(void* buf, size_t len, uint64_t seed) {
    uint64_t state = seed;
    unsigned char* p = buf;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v = test_rand_next(&state);
        memcpy(p + i, &v, 8);
    }
    if (i < len) {
        uint64_t v = test_rand_next(&state);
        memcpy(p + i, &v, len - i);
    }
}

ptrdiff_t test_verify(const void* buf, size_t len, uint64_t seed) {
    uint64_t state = seed;
    const unsigned char* p = buf;
    size_t i = 0;
    for (; i < len; i += 8) {
        uint64_t v = test_rand_next(&state);
        size_t n = len - i < 8 ? len - i : 8;
        if (memcmp(p + i, &v, n) != 0) {
            for (size_t k = 0; k < n; k++)
                if (p[i + k] != ((unsigned char*)&v)[k]) return (ptrdiff_t)(i + k);
        }
    }
    return -1;
}

uint64_t test_hash(const void* buf, size_t len) {
    /* FNV-1a over 8-byte words: enough to tell a changed region apart */
    const unsigned char* p = buf;
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        h = (h ^ v) * 0x100000001b3ull;
    }
    for (; i < len; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

ssize_t test_read_text(const char* path, char* buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t len = 0;
    while (len + 1 < size) {
        ssize_t n = read(fd, buf + len, size - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

int test_read_all(int fd, void* buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 3000) != 1) return 0;
        ssize_t n = read(fd, (char*)buf + got, len - got);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) return 0;
        got += (size_t)n;
    }
    return 1;
}

int test_status_field(pid_t pid, const char* key, char* out, size_t size) {
    char path[64], text[8192];
    if (pid == 0)
        snprintf(path, sizeof path, "/proc/self/status");
    else
        snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    if (test_read_text(path, text, sizeof text) < 0) return -1;
    size_t klen = strlen(key);
    for (char* line = text; line && *line;) {
        char* next = strchr(line, '\n');
        if (next) *next++ = '\0';
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            size_t o = 0;
            for (char* c = line + klen + 1; *c && o + 1 < size; c++)
                if (*c != ' ' && *c != '\t') out[o++] = *c;
            out[o] = '\0';
            return 0;
        }
        line = next;
    }
    return -1;
}

int test_proc_is_ours(void) {
    char nspid[64];
    if (test_status_field(0, "NSpid", nspid, sizeof nspid) != 0) return 1;
    /* one pid per namespace level, spaces removed: compare with getpid() alone */
    char own[16];
    snprintf(own, sizeof own, "%d", (int)getpid());
    return strcmp(nspid, own) == 0;
}

uint64_t test_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* One buffer for the maps readers: static, so reading maps does not change them. */
static char maps_text[1 << 20];

int test_vma_line(const void* addr, char* line, size_t size) {
    if (test_read_text("/proc/self/maps", maps_text, sizeof maps_text) < 0) return -1;
    uintptr_t a = (uintptr_t)addr;
    for (char* l = maps_text; l && *l;) {
        char* next = strchr(l, '\n');
        if (next) *next++ = '\0';
        unsigned long start, end;
        if (sscanf(l, "%lx-%lx", &start, &end) == 2 && a >= start && a < end) {
            snprintf(line, size, "%s", l);
            return 0;
        }
        l = next;
    }
    return -1;
}

void test_vma_perms(const void* addr, char perms[5]) {
    char line[512];
    perms[0] = '\0';
    if (test_vma_line(addr, line, sizeof line) == 0) sscanf(line, "%*s %4s", perms);
}

void test_smaps_field(const void* addr, const char* key, char* out, size_t size) {
    out[0] = '\0';
    if (test_read_text("/proc/self/smaps", maps_text, sizeof maps_text) < 0) return;
    uintptr_t a = (uintptr_t)addr;
    size_t klen = strlen(key);
    int inside = 0;
    for (char* l = maps_text; l && *l;) {
        char* next = strchr(l, '\n');
        if (next) *next++ = '\0';
        unsigned long start, end;
        char c;
        if (sscanf(l, "%lx-%lx %c", &start, &end, &c) == 3)
            inside = a >= start && a < end;
        else if (inside && strncmp(l, key, klen) == 0 && l[klen] == ':') {
            snprintf(out, size, "%s", l + klen + 1);
            return;
        }
        l = next;
    }
}

void test_vma_flags(const void* addr, char* out, size_t size) { test_smaps_field(addr, "VmFlags", out, size); }

int test_has_vma_flag(const void* addr, const char* flag) {
    char flags[256], want[8];
    test_vma_flags(addr, flags, sizeof flags);
    snprintf(want, sizeof want, " %s", flag);
    size_t n = strlen(want);
    for (const char* p = strstr(flags, want); p; p = strstr(p + 1, want))
        if (p[n] == ' ' || p[n] == '\0') return 1;
    return 0;
}

int test_is_zero(const void* p, size_t len) {
    const unsigned char* b = p;
    for (size_t i = 0; i < len; i++)
        if (b[i]) return 0;
    return 1;
}

void* test_mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
    void* p = mmap(addr, len, prot, flags, fd, off);
    if (p == MAP_FAILED) {
        test_fail("mmap %zu bytes at offset %lld: %s", len, (long long)off, strerror(errno));
        test_finish();
        _exit(1);
    }
    return p;
}

void test_send_fd(int sock, int fd) {
    char byte = 'f';
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
    struct cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    if (sendmsg(sock, &mh, 0) != 1) test_fail("sendmsg(SCM_RIGHTS) of fd %d on %d: %s", fd, sock, strerror(errno));
}

/* PIDFD_GET_INFO's argument, its first version. */
struct test_pidfd_info_v0 {
    uint64_t mask;
    uint64_t cgroupid;
    uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
    int32_t exit_code;
};

long test_pidfd_pid(int pidfd) {
    struct test_pidfd_info_v0 info;
    memset(&info, 0, sizeof info);
    info.mask = 1; /* PIDFD_INFO_PID */
    if (ioctl(pidfd, _IOWR(0xFF, 11, struct test_pidfd_info_v0), &info) != 0) return -errno;
    return (long)info.pid;
}

void test_attach_filter(int fd, const struct sock_filter* code, unsigned n) {
    struct sock_fprog prog = {(unsigned short)n, (struct sock_filter*)code};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0)
        test_fail("fd %d: SO_ATTACH_FILTER: %s", fd, strerror(errno));
}

int test_filter_is(int fd, const struct sock_filter* code, unsigned n) {
    struct sock_filter now[16];
    socklen_t count = 16;
    if (getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, now, &count) != 0) return 0;
    return count == n && memcmp(now, code, n * sizeof *code) == 0;
}

void test_detach_filter(int fd) {
    int zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &zero, sizeof zero);
}

void test_socketpair_at(int type, int a, int b) {
    int sv[2];
    if (socketpair(AF_UNIX, type, 0, sv) != 0) test_fail("socketpair: %s", strerror(errno));
    dup2(sv[0], a);
    dup2(sv[1], b);
    close(sv[0]);
    close(sv[1]);
}
