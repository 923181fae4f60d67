/* The lower half's shim: the first object of the private dlmopen namespace, linked against the
 * real libmpi so that libmpi and its dependencies follow it in the namespace's global scope.
 * Symbols defined here therefore win over libc's for every object of the namespace:
 *  - dlopen drops RTLD_GLOBAL: glibc crashes when an object in a dlmopen namespace is opened
 *    with RTLD_GLOBAL, which Open MPI does for its MCA components;
 *  - pthread keys are the application's libc's (see "thread-specific keys");
 *  - thread, fd, mapping and signal-handler creators record what the lower half owns, so that a dump can leave
 *    it out (the upper half reads the lists through ckpt_shim_*).
 * Calls libc makes to itself (fopen's open, malloc's mmap) are not seen here; the upper half
 * adds what appeared around MPI_Init. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

static void* next_symbol(const char* name) {
    void* p = dlsym(RTLD_NEXT, name);
    if (!p)
        abort();
    return p;
}
#define NEXT(name) \
    static __typeof__(&name) next_##name; \
    if (!next_##name) next_##name = (__typeof__(&name))next_symbol(#name)

/* ---- dlopen ---- */
EXPORT void* dlopen(const char* file, int mode) {
    NEXT(dlopen);
    return next_dlopen(file, mode & ~RTLD_GLOBAL);
}

/* ---- threads ---- */
#define MAX_THREADS 256
static _Atomic pid_t threads[MAX_THREADS];
static atomic_size_t nthreads;

struct start {
    void* (*fn)(void*);
    void* arg;
};

static void* thread_start(void* p) {
    struct start s = *(struct start*)p;
    free(p);
    size_t i = atomic_fetch_add(&nthreads, 1);
    if (i < MAX_THREADS)
        atomic_store(&threads[i], gettid());
    return s.fn(s.arg);
}

EXPORT int pthread_create(pthread_t* t, const pthread_attr_t* attr, void* (*fn)(void*), void* arg) {
    NEXT(pthread_create);
    struct start* s = malloc(sizeof *s);
    if (!s)
        return EAGAIN;
    s->fn = fn;
    s->arg = arg;
    int rc = next_pthread_create(t, attr, thread_start, s);
    if (rc != 0)
        free(s);
    return rc;
}

/* ---- thread-specific keys ----
 * Both libcs use the same thread descriptors (the threads are the process's), but each has its
 * own table of keys: the lower libc would hand out key numbers the application's libc already
 * gave (an interpreter holds some: Python does), and the two would overwrite, and free, each
 * other's values. So keys, and the values stored under them, go to the application's libc
 * (the base namespace's): one table for the process. */
static void* base_symbol(const char* name) {
    static void* base_libc;
    if (!base_libc)
        base_libc = dlmopen(LM_ID_BASE, "libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    void* p = base_libc ? dlsym(base_libc, name) : NULL;
    return p ? p : next_symbol(name);
}
#define BASE(name) \
    static __typeof__(&name) base_##name; \
    if (!base_##name) base_##name = (__typeof__(&name))base_symbol(#name)

EXPORT int pthread_key_create(pthread_key_t* key, void (*destructor)(void*)) {
    BASE(pthread_key_create);
    return base_pthread_key_create(key, destructor);
}
EXPORT int pthread_key_delete(pthread_key_t key) {
    BASE(pthread_key_delete);
    return base_pthread_key_delete(key);
}
EXPORT void* pthread_getspecific(pthread_key_t key) {
    BASE(pthread_getspecific);
    return base_pthread_getspecific(key);
}
EXPORT int pthread_setspecific(pthread_key_t key, const void* value) {
    BASE(pthread_setspecific);
    return base_pthread_setspecific(key, value);
}

/* ---- fds ---- */
#define MAX_FD 65536
static atomic_uint_fast64_t fd_bits[MAX_FD / 64];
/* What each noted fd was: libc closes some of its own (fclose) where this shim does not see
 * it, and the number may then be another's (the application's). Only an fd that is still the
 * same file counts. */
static uint64_t fd_dev[MAX_FD], fd_ino[MAX_FD];

static int note_fd(int fd) {
    if (fd >= 0 && fd < MAX_FD) {
        struct stat st;
        if (fstat(fd, &st) != 0)
            return fd;
        fd_dev[fd] = st.st_dev;
        fd_ino[fd] = st.st_ino;
        atomic_fetch_or(&fd_bits[fd / 64], (uint64_t)1 << (fd % 64));
    }
    return fd;
}
static int still_noted(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_dev == fd_dev[fd] && st.st_ino == fd_ino[fd];
}
static void forget_fd(int fd) {
    if (fd >= 0 && fd < MAX_FD)
        atomic_fetch_and(&fd_bits[fd / 64], ~((uint64_t)1 << (fd % 64)));
}

EXPORT int socket(int domain, int type, int protocol) {
    NEXT(socket);
    return note_fd(next_socket(domain, type, protocol));
}
EXPORT int socketpair(int domain, int type, int protocol, int sv[2]) {
    NEXT(socketpair);
    int rc = next_socketpair(domain, type, protocol, sv);
    if (rc == 0) {
        note_fd(sv[0]);
        note_fd(sv[1]);
    }
    return rc;
}
EXPORT int accept(int fd, struct sockaddr* addr, socklen_t* len) {
    NEXT(accept);
    return note_fd(next_accept(fd, addr, len));
}
EXPORT int accept4(int fd, struct sockaddr* addr, socklen_t* len, int flags) {
    NEXT(accept4);
    return note_fd(next_accept4(fd, addr, len, flags));
}
EXPORT int pipe(int fds[2]) {
    NEXT(pipe);
    int rc = next_pipe(fds);
    if (rc == 0) {
        note_fd(fds[0]);
        note_fd(fds[1]);
    }
    return rc;
}
EXPORT int pipe2(int fds[2], int flags) {
    NEXT(pipe2);
    int rc = next_pipe2(fds, flags);
    if (rc == 0) {
        note_fd(fds[0]);
        note_fd(fds[1]);
    }
    return rc;
}
EXPORT int eventfd(unsigned int initval, int flags) {
    NEXT(eventfd);
    return note_fd(next_eventfd(initval, flags));
}
EXPORT int epoll_create(int size) {
    NEXT(epoll_create);
    return note_fd(next_epoll_create(size));
}
EXPORT int epoll_create1(int flags) {
    NEXT(epoll_create1);
    return note_fd(next_epoll_create1(flags));
}
EXPORT int open(const char* path, int flags, ...) {
    NEXT(open);
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, mode_t);
        va_end(ap);
    }
    return note_fd(next_open(path, flags, mode));
}
EXPORT int open64(const char* path, int flags, ...) {
    NEXT(open64);
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, mode_t);
        va_end(ap);
    }
    return note_fd(next_open64(path, flags, mode));
}
EXPORT int openat(int dirfd, const char* path, int flags, ...) {
    NEXT(openat);
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, mode_t);
        va_end(ap);
    }
    return note_fd(next_openat(dirfd, path, flags, mode));
}
EXPORT int close(int fd) {
    NEXT(close);
    forget_fd(fd);
    return next_close(fd);
}

/* ---- mappings ---- */
#define MAX_MAPS 1024
struct range {
    uintptr_t start, end;
};
static struct range maps[MAX_MAPS];
static size_t nmaps;
static atomic_flag maps_lock = ATOMIC_FLAG_INIT;

static void lock_maps(void) {
    while (atomic_flag_test_and_set_explicit(&maps_lock, memory_order_acquire)) {
    }
}
static void unlock_maps(void) { atomic_flag_clear_explicit(&maps_lock, memory_order_release); }

static void note_map(uintptr_t start, size_t len) {
    lock_maps();
    if (nmaps < MAX_MAPS)
        maps[nmaps++] = (struct range){start, start + len};
    unlock_maps();
}

static void forget_map(uintptr_t start, size_t len) {
    uintptr_t end = start + len;
    lock_maps();
    for (size_t i = 0; i < nmaps;) {
        struct range* r = &maps[i];
        if (r->end <= start || r->start >= end) {
            ++i;
        } else if (r->start >= start && r->end <= end) {
            *r = maps[--nmaps];
        } else if (r->start < start && r->end > end) {
            if (nmaps < MAX_MAPS)
                maps[nmaps++] = (struct range){end, r->end};
            r->end = start;
            ++i;
        } else {
            if (r->start < start)
                r->end = start;
            else
                r->start = end;
            ++i;
        }
    }
    unlock_maps();
}

EXPORT void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
    NEXT(mmap);
    void* p = next_mmap(addr, len, prot, flags, fd, off);
    if (p != MAP_FAILED)
        note_map((uintptr_t)p, len);
    return p;
}
EXPORT void* mmap64(void* addr, size_t len, int prot, int flags, int fd, off64_t off) {
    NEXT(mmap64);
    void* p = next_mmap64(addr, len, prot, flags, fd, off);
    if (p != MAP_FAILED)
        note_map((uintptr_t)p, len);
    return p;
}
EXPORT int munmap(void* addr, size_t len) {
    NEXT(munmap);
    int rc = next_munmap(addr, len);
    if (rc == 0)
        forget_map((uintptr_t)addr, len);
    return rc;
}

/* ---- signal handlers ---- */
static atomic_uint_fast64_t signal_bits; /* bit s-1: the lower half set signal s's handler */

static void note_signal(int sig) {
    if (sig >= 1 && sig <= 64)
        atomic_fetch_or(&signal_bits, (uint64_t)1 << (sig - 1));
}

EXPORT int sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
    NEXT(sigaction);
    int rc = next_sigaction(sig, act, old);
    if (rc == 0 && act)
        note_signal(sig);
    return rc;
}
EXPORT sighandler_t signal(int sig, sighandler_t handler) {
    NEXT(signal);
    sighandler_t rc = next_signal(sig, handler);
    if (rc != SIG_ERR)
        note_signal(sig);
    return rc;
}

/* ---- queries for the upper half: each returns the total, fills up to max ---- */
EXPORT size_t ckpt_shim_threads(pid_t* out, size_t max) {
    size_t n = atomic_load(&nthreads);
    if (n > MAX_THREADS)
        n = MAX_THREADS;
    for (size_t i = 0; i < n && i < max; ++i)
        out[i] = atomic_load(&threads[i]);
    return n;
}

EXPORT size_t ckpt_shim_fds(int* out, size_t max) {
    size_t n = 0;
    for (int w = 0; w < MAX_FD / 64; ++w) {
        uint64_t bits = atomic_load(&fd_bits[w]);
        for (int b = 0; bits && b < 64; ++b, bits >>= 1)
            if ((bits & 1) && still_noted(w * 64 + b)) {
                if (n < max)
                    out[n] = w * 64 + b;
                ++n;
            }
    }
    return n;
}

EXPORT uint64_t ckpt_shim_signals(void) { return atomic_load(&signal_bits); }

/* out holds pairs: start, end */
EXPORT size_t ckpt_shim_mappings(uint64_t* out, size_t max_pairs) {
    lock_maps();
    size_t n = nmaps;
    for (size_t i = 0; i < n && i < max_pairs; ++i) {
        out[2 * i] = maps[i].start;
        out[2 * i + 1] = maps[i].end;
    }
    unlock_maps();
    return n;
}
