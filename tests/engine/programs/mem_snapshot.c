/* mem_snapshot: threads writing constantly to 256 MiB of private memory while it is dumped
 * (with --leave-running, the copy-on-write snapshot copies the pages as they write).
 *
 * Every write is one step of one global sequence: a writer takes the next number s from a
 * counter and writes s + 1 into a slot that step s alone ever writes (page s * K mod N, slot
 * s / N of that page: a bijection between steps and slots; no slot is written twice). So the
 * memory of any one instant is exactly: the slots of the steps taken before it hold their
 * number, every other slot 0, and the counter says which (a step taken but not written at
 * the instant is finished by its thread once restored). Before writing its slot, a writer
 * checks that it is 0. A page copied into the image after a write the original made after
 * the freeze holds the slot of a step the copy has not yet made: the copy finds it non-zero
 * when it makes that step, or the final scan finds it beyond the counter. Either way FAIL:
 * a wrong copy is detected for certain, even one the copy would later write over.
 *
 * With REMAPPER, another thread moves and drops memory during the copy: a 4 MiB region at a
 * fixed address is replaced again and again by a fresh one filled elsewhere and moved over
 * it (mremap MREMAP_FIXED, which unmaps the old one), after checking it holds the pattern
 * of the last replacement; a scratch region is dropped (MADV_DONTNEED) and unmapped. The
 * engine then cannot keep its snapshot (the tree moved pages it had not copied) and dumps
 * again frozen: the image must still be one instant's.
 *
 * With EXITER, a thread exits during the copy: it waits in sigtimedwait, which the dump's freeze ends
 * with EINTR (or, without a dump, the check's signal does), and exits at once. Its
 * clear_child_tid is a word in the middle of 1 MiB mapped before everything else (higher up,
 * so copied after the 256 MiB, and not in the 256 KiB unit of the busy control page): the
 * kernel must clear it at the exit, which it does not (no fault is handled for an exiting
 * thread) if that page is still write-protected then. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

#define PAGE 4096ul
#define NPAGES 65536ul /* 256 MiB */
#define SLOTS (PAGE / 8)
#define STEPS (NPAGES * SLOTS)
#define K 2654435761ul /* odd: s * K mod NPAGES runs through every page */
#define WRITERS 3
#define REMAP_LEN (4ul << 20)

struct control {
    _Atomic uint64_t next;     /* the next step */
    _Atomic uint64_t bad;      /* slots found written before their step */
    _Atomic uint64_t first_bad;
    _Atomic int stop;
    _Atomic uint64_t remaps;   /* replacements of the remapped region done */
    _Atomic uint64_t remap_bad;
};

static struct control* ctl;   /* in a page of its own, copied like the rest */
#ifdef EXITER
static _Atomic uint64_t* exit_word; /* the exiting thread's clear_child_tid */
static _Atomic pid_t exiter_tid;
#endif
static uint64_t* mem;
#ifdef REMAPPER
static unsigned char* remapped; /* REMAP_LEN at a fixed address */
#endif

static uint64_t* slot_of(uint64_t s) { return &mem[((s * K) % NPAGES) * SLOTS + s / NPAGES]; }

static void pause_a_little(void) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
}

static void* writer(void* arg) {
    (void)arg;
    for (unsigned n = 0; !atomic_load(&ctl->stop); ++n) {
        uint64_t s = atomic_fetch_add(&ctl->next, 1);
        if (s >= STEPS) break; /* full */
        uint64_t* p = slot_of(s);
        if (__atomic_load_n(p, __ATOMIC_RELAXED) != 0 && atomic_fetch_add(&ctl->bad, 1) == 0)
            atomic_store(&ctl->first_bad, s + 1);
        __atomic_store_n(p, s + 1, __ATOMIC_RELAXED);
        if (n % 512 == 511) pause_a_little(); /* about 20 s to fill it all */
    }
    return NULL;
}

#ifdef EXITER
/* Waits for the dump's freeze (EINTR) or the check's SIGUSR2, then exits; the kernel then
 * clears *exit_word. */
static void* exiter(void* arg) {
    (void)arg;
    atomic_store(&exiter_tid, (pid_t)syscall(SYS_gettid));
    syscall(SYS_set_tid_address, exit_word);
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    (void)sigtimedwait(&usr2, NULL, NULL); /* EINTR, or SIGUSR2 */
    syscall(SYS_exit, 0); /* not pthread_exit: glibc's own tid word is not ours any more */
    return NULL;
}
#endif

#ifdef REMAPPER
static uint64_t pattern(uint64_t gen, size_t i) { return (gen << 32) ^ (i * 0x9E3779B97F4A7C15ul); }

static void* remapper(void* arg) {
    (void)arg;
    unsigned char* scratch = test_mmap(NULL, REMAP_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    while (!atomic_load(&ctl->stop)) {
        uint64_t gen = atomic_load(&ctl->remaps);
        const uint64_t* cur = (const uint64_t*)remapped;
        for (size_t i = 0; i < REMAP_LEN / 8; ++i)
            if (cur[i] != pattern(gen, i)) {
                atomic_fetch_add(&ctl->remap_bad, 1);
                break;
            }
        uint64_t* fresh = mmap(NULL, REMAP_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (fresh == MAP_FAILED) {
            atomic_fetch_add(&ctl->remap_bad, 1);
            break;
        }
        for (size_t i = 0; i < REMAP_LEN / 8; ++i) fresh[i] = pattern(gen + 1, i);
        if (mremap(fresh, REMAP_LEN, REMAP_LEN, MREMAP_MAYMOVE | MREMAP_FIXED, remapped) != remapped) {
            atomic_fetch_add(&ctl->remap_bad, 1);
            break;
        }
        atomic_store(&ctl->remaps, gen + 1);
        memset(scratch, (int)gen, REMAP_LEN);
        madvise(scratch, REMAP_LEN, MADV_DONTNEED);
        unsigned char* gone = mmap(NULL, PAGE * 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (gone != MAP_FAILED) {
            memset(gone, 1, PAGE * 16);
            munmap(gone, PAGE * 16);
        }
        pause_a_little();
    }
    return NULL;
}
#endif

int main(int argc, char** argv) {
#if defined(REMAPPER) && defined(EXITER)
#error "one variant at a time"
#elif defined(REMAPPER)
    test_init(argc, argv, 3);
#elif defined(EXITER)
#define EXIT_POINT 3
    test_init(argc, argv, 3);
#else
    test_init(argc, argv, 2);
#endif
    const int anon = MAP_PRIVATE | MAP_ANONYMOUS;
#ifdef EXITER
    unsigned char* exit_region = test_mmap(NULL, 256 * PAGE, PROT_READ | PROT_WRITE, anon, -1, 0);
    memset(exit_region, 1, 256 * PAGE); /* every page present */
    exit_word = (_Atomic uint64_t*)(exit_region + 128 * PAGE);
    *exit_word = 1;
#endif
    ctl = test_mmap(NULL, PAGE, PROT_READ | PROT_WRITE, anon, -1, 0);
    mem = test_mmap(NULL, NPAGES * PAGE, PROT_READ | PROT_WRITE, anon, -1, 0);
    madvise(mem, NPAGES * PAGE, MADV_NOHUGEPAGE);
    for (size_t i = 0; i < NPAGES; ++i) mem[i * SLOTS + SLOTS - 1] = 0; /* every page present */
#ifdef EXITER
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &usr2, NULL); /* taken by sigtimedwait only */
    pthread_t ex;
    pthread_create(&ex, NULL, exiter, NULL);
    while (atomic_load(&exiter_tid) == 0) pause_a_little();
#endif
    pthread_t th[WRITERS + 1];
    for (int i = 0; i < WRITERS; ++i) pthread_create(&th[i], NULL, writer, NULL);
    int threads = WRITERS;
#ifdef REMAPPER
    remapped = test_mmap(NULL, REMAP_LEN, PROT_READ | PROT_WRITE, anon, -1, 0);
    for (size_t i = 0; i < REMAP_LEN / 8; ++i) ((uint64_t*)remapped)[i] = pattern(0, i);
    pthread_create(&th[threads++], NULL, remapper, NULL);
#endif
    /* Some steps made before the dump. */
    while (atomic_load(&ctl->next) < 100000) pause_a_little();
    test_ready();
    test_wait_check();

    atomic_store(&ctl->stop, 1);
    for (int i = 0; i < threads; ++i) pthread_join(th[i], NULL);
#ifdef EXITER
    /* The exiting thread: gone after the dump (or told to go now), its word cleared. */
    pid_t tid = atomic_load(&exiter_tid);
    (void)syscall(SYS_tgkill, getpid(), tid, SIGUSR2);
    char task[64];
    snprintf(task, sizeof task, "/proc/self/task/%d", (int)tid);
    while (access(task, F_OK) == 0) pause_a_little();
    if (test_corrupt(EXIT_POINT)) atomic_store(exit_word, 1); /* the clearing lost */
    CHECK(atomic_load(exit_word) == 0, "the clear_child_tid of thread %d, which exited, was not cleared (%llu)",
          (int)tid, (unsigned long long)atomic_load(exit_word));
#endif
    uint64_t made = atomic_load(&ctl->next);
    if (made > STEPS) made = STEPS;
    if (test_corrupt(1) && made < STEPS) *slot_of(made) = made + 1; /* a page copied after a later write */
    if (test_corrupt(2)) *slot_of(made / 2) = 0;                     /* a write lost */
    CHECK(atomic_load(&ctl->bad) == 0, "%llu slots held a value before their step wrote it (first step %llu)",
          (unsigned long long)atomic_load(&ctl->bad), (unsigned long long)atomic_load(&ctl->first_bad) - 1);
    uint64_t wrong = 0, first = 0;
    for (uint64_t s = 0; s < STEPS; ++s) {
        uint64_t want = s < made ? s + 1 : 0;
        if (*slot_of(s) != want && wrong++ == 0) first = s;
    }
    CHECK(wrong == 0, "%llu slots not as the %llu steps made left them (first: step %llu holds %llu)",
          (unsigned long long)wrong, (unsigned long long)made, (unsigned long long)first,
          (unsigned long long)*slot_of(first));
    fprintf(stderr, "mem_snapshot: %llu steps made\n", (unsigned long long)made);
#ifdef REMAPPER
    uint64_t gen = atomic_load(&ctl->remaps);
    if (test_corrupt(3)) ((uint64_t*)remapped)[12345] ^= 1;
    CHECK(atomic_load(&ctl->remap_bad) == 0, "the remapped region held another pattern than its last replacement's");
    size_t off = 0;
    for (; off < REMAP_LEN / 8; ++off)
        if (((uint64_t*)remapped)[off] != pattern(gen, off)) break;
    CHECK(off == REMAP_LEN / 8, "the remapped region differs from replacement %llu at word %zu",
          (unsigned long long)gen, off);
    fprintf(stderr, "mem_snapshot: %llu replacements\n", (unsigned long long)gen);
#endif
    return test_finish();
}
