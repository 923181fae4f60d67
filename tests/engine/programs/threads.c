/* threads: every thread comes back with its own registers and per-thread kernel state.
 *
 * Four worker threads park in a futex wait from inline assembly, holding thread-specific
 * values in rbx, r12-r15, ymm0-15 (xmm0-15 without AVX; with AVX-512: zmm0-31 and k1-k7) and
 * two x87 registers,
 * each with its own rounding mode (x87 control word and MXCSR). After restore they wake up and
 * compare what the registers hold with what they loaded. Each thread also checks:
 *  - its tid (gettid) and the process pid;
 *  - its TLS value and fs base;
 *  - its signal mask (distinct per thread) and its sigaltstack;
 *  - its robust futex list head; and the list works: a robust mutex held by a thread that
 *    exits after restore gives EOWNERDEAD to the next locker;
 *  - its rseq registration (glibc registers one per thread): registering the same area again
 *    gives EBUSY, and cpu_id matches getcpu;
 *  - clear_child_tid: pthread_join of the exited threads returns (joins wait on it). */
#include <errno.h>
#include <fenv.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/rseq.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <asm/prctl.h>

#include "testlib.h"

#define WORKERS 4

struct park {
    volatile int* go;
    uint64_t gpr_in[5], gpr_out[5];
    double x87_in[2], x87_out[2];
    uint64_t k_in[7], k_out[7];
    unsigned char vec_in[32][64] __attribute__((aligned(64)));
    unsigned char vec_out[32][64] __attribute__((aligned(64)));
};

struct worker {
    int index;
    pthread_t thread;
    pid_t tid;
    uint64_t tls_expect;
    unsigned long fs_base;
    sigset_t mask;
    stack_t altstack;
    void* robust_head;
    size_t robust_len;
    int rseq_len; /* 0: glibc registered no rseq */
    int rounding;
    struct park park;
    char failure[300];
};

static struct worker workers[WORKERS];
static volatile int go;
static atomic_int parked;
static pthread_mutex_t robust_mutex;
static __thread uint64_t tls_value;
static int have_avx512, have_avx;

#define GPR_LOAD                                         \
    "mov %c[gi]+0(%[p]), %%rbx\n\t"                      \
    "mov %c[gi]+8(%[p]), %%r12\n\t"                      \
    "mov %c[gi]+16(%[p]), %%r13\n\t"                     \
    "mov %c[gi]+24(%[p]), %%r14\n\t"                     \
    "mov %c[gi]+32(%[p]), %%r15\n\t"                     \
    "fldl %c[xi](%[p])\n\t"                              \
    "fldl %c[xi]+8(%[p])\n\t"
#define GPR_STORE                                        \
    "mov %%rbx, %c[go_]+0(%[p])\n\t"                     \
    "mov %%r12, %c[go_]+8(%[p])\n\t"                     \
    "mov %%r13, %c[go_]+16(%[p])\n\t"                    \
    "mov %%r14, %c[go_]+24(%[p])\n\t"                    \
    "mov %%r15, %c[go_]+32(%[p])\n\t"                    \
    "fstpl %c[xo]+8(%[p])\n\t"                           \
    "fstpl %c[xo](%[p])\n\t"
/* futex(go, FUTEX_WAIT_PRIVATE, 0) until *go != 0; only rax rcx rdx rsi rdi r10 r11 change */
#define WAIT_LOOP                                        \
    "1: mov %c[gop](%[p]), %%rdi\n\t"                    \
    "cmpl $0, (%%rdi)\n\t"                               \
    "jne 2f\n\t"                                         \
    "mov %[nr], %%eax\n\t"                               \
    "mov %[op], %%esi\n\t"                               \
    "xor %%edx, %%edx\n\t"                               \
    "xor %%r10d, %%r10d\n\t"                             \
    "syscall\n\t"                                        \
    "jmp 1b\n\t"                                         \
    "2:\n\t"
#define V(op, n, reg) op " " #n "*64+%c[vi](%[p]), %%" reg #n "\n\t"
#define VS(op, n, reg) op " %%" reg #n ", " #n "*64+%c[vo](%[p])\n\t"
#define EACH16(M, op, reg)                                                                    \
    M(op, 0, reg) M(op, 1, reg) M(op, 2, reg) M(op, 3, reg) M(op, 4, reg) M(op, 5, reg)       \
        M(op, 6, reg) M(op, 7, reg) M(op, 8, reg) M(op, 9, reg) M(op, 10, reg) M(op, 11, reg) \
            M(op, 12, reg) M(op, 13, reg) M(op, 14, reg) M(op, 15, reg)
#define EACH16HI(M, op, reg)                                                                      \
    M(op, 16, reg) M(op, 17, reg) M(op, 18, reg) M(op, 19, reg) M(op, 20, reg) M(op, 21, reg)     \
        M(op, 22, reg) M(op, 23, reg) M(op, 24, reg) M(op, 25, reg) M(op, 26, reg) M(op, 27, reg) \
            M(op, 28, reg) M(op, 29, reg) M(op, 30, reg) M(op, 31, reg)
#define K(op, n) op " %c[ki]+" #n "*8-8(%[p]), %%k" #n "\n\t"
#define KS(op, n) op " %%k" #n ", %c[ko]+" #n "*8-8(%[p])\n\t"
#define OPERANDS                                                                               \
    : [p] "r"(park), [gi] "i"(offsetof(struct park, gpr_in)),                                  \
      [go_] "i"(offsetof(struct park, gpr_out)), [xi] "i"(offsetof(struct park, x87_in)),      \
      [xo] "i"(offsetof(struct park, x87_out)), [vi] "i"(offsetof(struct park, vec_in)),       \
      [vo] "i"(offsetof(struct park, vec_out)), [ki] "i"(offsetof(struct park, k_in)),         \
      [ko] "i"(offsetof(struct park, k_out)), [gop] "i"(offsetof(struct park, go)),            \
      [nr] "i"(SYS_futex), [op] "i"(FUTEX_WAIT_PRIVATE)
#define CLOBBERS                                                                            \
    "rax", "rcx", "rdx", "rsi", "rdi", "r10", "r11", "rbx", "r12", "r13", "r14", "r15", "st", \
        "st(1)", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",    \
        "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc"

__attribute__((target("avx"))) static void park_avx(struct park* park) {
    __asm__ volatile(GPR_LOAD EACH16(V, "vmovdqu", "ymm") WAIT_LOOP GPR_STORE EACH16(VS, "vmovdqu",
                                                                                      "ymm"):OPERANDS
                     : CLOBBERS);
}

static void park_sse(struct park* park) {
    __asm__ volatile(GPR_LOAD EACH16(V, "movdqu", "xmm") WAIT_LOOP GPR_STORE EACH16(VS, "movdqu",
                                                                                    "xmm")
                     :OPERANDS
                     : CLOBBERS);
}

__attribute__((target("avx512f,avx512bw"))) static void park_avx512(struct park* park) {
    __asm__ volatile(GPR_LOAD EACH16(V, "vmovdqu64", "zmm") EACH16HI(V, "vmovdqu64", "zmm")
                         K("kmovq", 1) K("kmovq", 2) K("kmovq", 3) K("kmovq", 4) K("kmovq", 5)
                             K("kmovq", 6) K("kmovq", 7) WAIT_LOOP GPR_STORE
                                 EACH16(VS, "vmovdqu64", "zmm") EACH16HI(VS, "vmovdqu64", "zmm")
                                     KS("kmovq", 1) KS("kmovq", 2) KS("kmovq", 3) KS("kmovq", 4)
                                         KS("kmovq", 5) KS("kmovq", 6) KS("kmovq", 7):OPERANDS
                     : CLOBBERS, "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22",
                       "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30",
                       "xmm31", "k1", "k2", "k3", "k4", "k5", "k6", "k7");
}

#define WFAIL(w, ...) \
    do {              \
        if (!(w)->failure[0]) snprintf((w)->failure, sizeof (w)->failure, __VA_ARGS__); \
    } while (0)

static struct rseq* my_rseq(void) {
    return (struct rseq*)((char*)__builtin_thread_pointer() + __rseq_offset);
}

static int rseq_register_again(int len) {
    return (int)syscall(SYS_rseq, my_rseq(), len, 0, RSEQ_SIG);
}

static void setup_thread_state(struct worker* w) {
    int i = w->index;
    w->tid = (pid_t)syscall(SYS_gettid);
    tls_value = w->tls_expect = 0x1111111111111111ull * (uint64_t)(i + 1);
    syscall(SYS_arch_prctl, ARCH_GET_FS, &w->fs_base);

    sigemptyset(&w->mask);
    sigaddset(&w->mask, SIGTERM);
    sigaddset(&w->mask, SIGRTMIN + i);
    if (i % 2) sigaddset(&w->mask, SIGUSR1);
    pthread_sigmask(SIG_SETMASK, &w->mask, NULL);

    w->altstack.ss_size = 65536 + 4096 * (size_t)i;
    w->altstack.ss_sp = malloc(w->altstack.ss_size);
    w->altstack.ss_flags = 0;
    sigaltstack(&w->altstack, NULL);

    syscall(SYS_get_robust_list, 0, &w->robust_head, &w->robust_len);
    if (__rseq_size > 0) {
        /* find the length glibc registered with: re-registering it gives EBUSY */
        int lens[] = {(int)__rseq_size, 32};
        for (size_t k = 0; k < 2 && !w->rseq_len; k++)
            if (rseq_register_again(lens[k]) < 0 && errno == EBUSY) w->rseq_len = lens[k];
        if (!w->rseq_len) WFAIL(w, "thread %d: glibc's rseq area is not registered", i);
    }

    int modes[] = {FE_TONEAREST, FE_DOWNWARD, FE_UPWARD, FE_TOWARDZERO};
    w->rounding = modes[i % 4];
    fesetround(w->rounding);

    struct park* p = &w->park;
    p->go = &go;
    test_fill(p->gpr_in, sizeof p->gpr_in, 1000 + (uint64_t)i);
    test_fill(p->vec_in, sizeof p->vec_in, 2000 + (uint64_t)i);
    test_fill(p->k_in, sizeof p->k_in, 3000 + (uint64_t)i);
    p->x87_in[0] = 1.5 + i;
    p->x87_in[1] = -0.25 * (i + 1);
}

static void check_thread_state(struct worker* w) {
    int i = w->index;
    struct park* p = &w->park;
    if (test_corrupt(1) && i == 1) p->gpr_in[2] ^= 1;
    if (test_corrupt(2) && i == 2) p->vec_in[7][3] ^= 1;
    if (test_corrupt(3) && i == 3) p->x87_in[1] += 1;
    if (test_corrupt(4) && i == 0) tls_value++;
    if (test_corrupt(5) && i == 3) {
        sigset_t extra;
        sigemptyset(&extra);
        sigaddset(&extra, SIGUSR2);
        pthread_sigmask(SIG_BLOCK, &extra, NULL);
    }
    if (test_corrupt(6) && i == 1) w->altstack.ss_size += 4096;
    if (test_corrupt(7) && i == 2) w->robust_head = (char*)w->robust_head + 8;
    if (test_corrupt(8) && i == 0) syscall(SYS_rseq, my_rseq(), w->rseq_len, RSEQ_FLAG_UNREGISTER, RSEQ_SIG);
    if (test_corrupt(9) && i == 1) fesetround(FE_TONEAREST);
    if (test_corrupt(10) && i == 2) w->tid++;
    if (test_corrupt(11) && i == 3)
        p->vec_in[have_avx512 ? 20 : 12][have_avx512 ? 60 : have_avx ? 30 : 10] ^= 1;

    if (memcmp(p->gpr_in, p->gpr_out, sizeof p->gpr_in) != 0)
        WFAIL(w, "thread %d: general registers rbx/r12-r15 changed", i);
    if (memcmp(p->x87_in, p->x87_out, sizeof p->x87_in) != 0)
        WFAIL(w, "thread %d: x87 registers changed (%g %g, expected %g %g)", i, p->x87_out[0],
              p->x87_out[1], p->x87_in[0], p->x87_in[1]);
    size_t vec_bytes = have_avx512 ? 64 : have_avx ? 32 : 16;
    int vec_regs = have_avx512 ? 32 : 16;
    for (int r = 0; r < vec_regs; r++)
        if (memcmp(p->vec_in[r], p->vec_out[r], vec_bytes) != 0)
            WFAIL(w, "thread %d: %s%d changed", i, have_avx512 ? "zmm" : have_avx ? "ymm" : "xmm", r);
    if (have_avx512 && memcmp(p->k_in, p->k_out, sizeof p->k_in) != 0)
        WFAIL(w, "thread %d: AVX-512 mask registers k1-k7 changed", i);
    if (fegetround() != w->rounding) WFAIL(w, "thread %d: rounding mode changed", i);
    unsigned mxcsr;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    unsigned short fpucw;
    __asm__ volatile("fnstcw %0" : "=m"(fpucw));
    if (((mxcsr >> 13) & 3) != ((fpucw >> 10) & 3))
        WFAIL(w, "thread %d: MXCSR and x87 rounding differ", i);

    if ((pid_t)syscall(SYS_gettid) != w->tid)
        WFAIL(w, "thread %d: tid %ld, expected %d", i, syscall(SYS_gettid), w->tid);
    if (tls_value != w->tls_expect) WFAIL(w, "thread %d: TLS value changed", i);
    unsigned long fs = 0;
    syscall(SYS_arch_prctl, ARCH_GET_FS, &fs);
    if (fs != w->fs_base) WFAIL(w, "thread %d: fs base %#lx, expected %#lx", i, fs, w->fs_base);

    sigset_t mask;
    pthread_sigmask(SIG_BLOCK, NULL, &mask);
    for (int s = 1; s < NSIG; s++)
        if (sigismember(&mask, s) != sigismember(&w->mask, s))
            WFAIL(w, "thread %d: signal %d is %sblocked", i, s, sigismember(&mask, s) ? "" : "not ");

    stack_t ss;
    sigaltstack(NULL, &ss);
    if (ss.ss_sp != w->altstack.ss_sp || ss.ss_size != w->altstack.ss_size || ss.ss_flags != 0)
        WFAIL(w, "thread %d: sigaltstack %p+%zu flags %d, expected %p+%zu", i, ss.ss_sp, ss.ss_size,
              ss.ss_flags, w->altstack.ss_sp, w->altstack.ss_size);

    void* head = NULL;
    size_t len = 0;
    syscall(SYS_get_robust_list, 0, &head, &len);
    if (head != w->robust_head || len != w->robust_len)
        WFAIL(w, "thread %d: robust list %p, expected %p", i, head, w->robust_head);

    if (w->rseq_len) {
        errno = 0;
        int rc = rseq_register_again(w->rseq_len);
        if (!(rc < 0 && errno == EBUSY))
            WFAIL(w, "thread %d: rseq area not registered any more (re-register: %s)", i,
                  rc == 0 ? "succeeded" : strerror(errno));
        int matched = 0;
        for (int tries = 0; tries < 100 && !matched; tries++) {
            unsigned cpu = 0;
            syscall(SYS_getcpu, &cpu, NULL, NULL);
            matched = (unsigned)my_rseq()->cpu_id == cpu;
        }
        if (!matched)
            WFAIL(w, "thread %d: rseq cpu_id %d does not follow the cpu", i, (int)my_rseq()->cpu_id);
    }
}

static void* worker_main(void* arg) {
    struct worker* w = arg;
    setup_thread_state(w);
    if (w->index == 0) pthread_mutex_lock(&robust_mutex); /* dies holding it */
    atomic_fetch_add(&parked, 1);
    if (have_avx512)
        park_avx512(&w->park);
    else if (have_avx)
        park_avx(&w->park);
    else
        park_sse(&w->park);
    check_thread_state(w);
    return NULL;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 11);
    have_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    have_avx = __builtin_cpu_supports("avx");
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&robust_mutex, &attr);

    pid_t pid = getpid();
    tls_value = 42;
    for (int i = 0; i < WORKERS; i++) {
        workers[i].index = i;
        pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
    }
    while (atomic_load(&parked) < WORKERS) usleep(1000);
    usleep(20000); /* let the last one enter its futex wait */
    test_ready();
    test_wait_check();

    go = 1;
    syscall(SYS_futex, &go, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    for (int i = 0; i < WORKERS; i++) {
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += 10;
        int rc = pthread_timedjoin_np(workers[i].thread, NULL, &deadline);
        if (rc != 0)
            test_fail("thread %d (tid %d) could not be joined: %s (clear_child_tid lost?)", i,
                      workers[i].tid, strerror(rc));
        else if (workers[i].failure[0])
            test_fail("%s", workers[i].failure);
    }
    CHECK(getpid() == pid && syscall(SYS_gettid) == pid, "main thread: pid/tid changed");
    CHECK(tls_value == 42, "main thread: TLS value changed");
    int rc = pthread_mutex_lock(&robust_mutex);
    CHECK(rc == EOWNERDEAD, "robust mutex held by an exited thread: lock gave %s, not EOWNERDEAD",
          strerror(rc));
    return test_finish();
}
