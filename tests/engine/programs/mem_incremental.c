// Memory that keeps changing between incremental dumps (incremental_test.py).
//
//   mem_incremental LOG [--close-tracker-at K | --own-uffd]
//
// Step by step (k = 1, 2, ...): writes 1 % of the pages of a big region at random and, at
// some steps, changes its mappings (unmaps one, maps a new one, MADV_DONTNEED of pages, grows
// one with mremap, maps anew over part of the big region, moves one); then records the hash of
// every page of every region it has, appends "step k digest D" to LOG (D: a digest of those
// hashes) and stops itself (SIGSTOP), to be dumped. Continued (the original after its dump, or
// a restored copy), it first checks every page against the recorded hashes and appends
// "verified k digest D" (D computed again from the pages: the driver compares it with the
// original's; or "BAD ..." and exits 1),
// then goes on with the next step. With --close-tracker-at K it closes every userfaultfd it
// holds (the engine's write tracker) at step K. With --own-uffd it holds a userfaultfd of its
// own at fd 200, with the features of the engine's write tracker (asynchronous write-protect),
// and checks at every step that it still has it: a dump must never take it for the engine's.
// Also a private writable mapping of a file (LOG.file), half written at the start, some of
// its written pages dropped (MADV_DONTNEED: the file's content shows again) at step 3; and,
// where the kernel has them (linux 6.13), guard pages installed in a tracked mapping at step 5
// (checked to stay guards: unreadable to process_vm_readv) and one removed at step 7.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#define MADV_GUARD_REMOVE 103
#endif

#define PAGE 4096ul
#define BIG_PAGES 16384ul  // 64 MiB
#define MAX_REGIONS 24
#define MAX_PAGES (BIG_PAGES + 4096)
#define FILE_PAGES 64
#define GUARDED_PAGES 16

struct region {
    char* base;
    size_t pages;
};
static struct region regions[MAX_REGIONS];
static int nregions;
static uint64_t hashes[MAX_PAGES];
static const char* log_path;
static uint64_t rng = 88172645463325252ull;

static uint64_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static uint64_t hash_page(const char* p) {
    uint64_t h = 1469598103934665603ull;
    const uint64_t* w = (const uint64_t*)p;
    for (size_t i = 0; i < PAGE / 8; ++i) h = (h ^ w[i]) * 1099511628211ull;
    return h;
}

static void say(const char* fmt, long a, long b) {
    // Opened for each line: no file open across a dump (it grows after it).
    char buf[160];
    int n = snprintf(buf, sizeof buf, fmt, a, b);
    int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, buf, (size_t)n) != n) _exit(3);
    close(fd);
}

static void fill_page(char* p, uint64_t seed) {
    uint64_t* w = (uint64_t*)p;
    for (size_t i = 0; i < PAGE / 8; ++i) w[i] = seed * 6364136223846793005ull + i;
}

static char* map_anon(char* at, size_t pages) {
    char* p = mmap(at, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (at ? MAP_FIXED : 0), -1, 0);
    if (p == MAP_FAILED) {
        say("BAD mmap of %ld pages (%ld)\n", (long)pages, 0);
        exit(1);
    }
    return p;
}

static int add_region(char* base, size_t pages) {
    regions[nregions].base = base;
    regions[nregions].pages = pages;
    return nregions++;
}

static void remove_region(int i) {
    regions[i] = regions[--nregions];
}

// A digest of the page hashes, in order: the driver compares the one printed before a dump
// with the one a restored copy computes from its pages.
static uint64_t digest(size_t n) {
    uint64_t d = 0;
    for (size_t k = 0; k < n; ++k) d = (d ^ hashes[k]) * 1099511628211ull + k;
    return d;
}

static void record(long step) {
    size_t k = 0;
    for (int r = 0; r < nregions; ++r)
        for (size_t i = 0; i < regions[r].pages; ++i) hashes[k++] = hash_page(regions[r].base + i * PAGE);
    say("step %ld digest %lx\n", step, (long)digest(k));
}

#define OWN_UFFD 200
static int own_uffd;

static void make_own_uffd(void) {
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    struct uffdio_api api = {.api = UFFD_API, .features = (1ull << 13) | (1ull << 15)};  // WP_UNPOPULATED, WP_ASYNC
    if (fd < 0 || ioctl(fd, UFFDIO_API, &api) != 0 || dup2(fd, OWN_UFFD) != OWN_UFFD) exit(8);
    close(fd);
    own_uffd = 1;
}

static void check_own_uffd(long step) {
    char link[64];
    ssize_t len = readlink("/proc/self/fd/200", link, sizeof link - 1);
    if (len > 0) link[len] = 0;
    if (len <= 0 || strcmp(link, "anon_inode:[userfaultfd]") != 0) {
        say("BAD step %ld: its own userfaultfd (fd %ld) is gone\n", step, OWN_UFFD);
        exit(1);
    }
}

// The guarded mapping: pages 4 and 5 guards from step 5, page 5 a page again from step 7.
static char* guarded;
static int have_guards;
static long guards_from = -1, guard_removed_from = -1;

static int readable(const char* p) {
    char c;
    struct iovec local = {&c, 1}, remote = {(void*)p, 1};
    return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == 1;
}

static void check_guards(long step) {
    if (guards_from < 0 || step < guards_from) return;
    int page5_guard = guard_removed_from < 0 || step < guard_removed_from;
    if (readable(guarded + 4 * PAGE) || readable(guarded + 5 * PAGE) == page5_guard) {
        say("BAD step %ld: the guard pages are not as installed (page 5 a guard: %ld)\n", step, page5_guard);
        exit(1);
    }
}

static void verify(long step) {
    if (own_uffd) check_own_uffd(step);
    check_guards(step);
    size_t k = 0;
    for (int r = 0; r < nregions; ++r)
        for (size_t i = 0; i < regions[r].pages; ++i, ++k)
            if (hash_page(regions[r].base + i * PAGE) != hashes[k]) {
                say("BAD step %ld: page %ld differs\n", step, (long)k);
                exit(1);
            }
    say("verified %ld digest %lx\n", step, (long)digest(k));
}

static void close_userfaultfds(void) {
    DIR* d = opendir("/proc/self/fd");
    if (!d) exit(4);
    int fds[64], n = 0;
    struct dirent* e;
    while ((e = readdir(d)) && n < 64) {
        char path[300], link[64];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(path, link, sizeof link - 1);
        if (len <= 0) continue;
        link[len] = 0;
        if (strcmp(link, "anon_inode:[userfaultfd]") == 0) fds[n++] = atoi(e->d_name);
    }
    closedir(d);
    for (int i = 0; i < n; ++i) close(fds[i]);
    say("closed %ld userfaultfds\n", n, 0);
    if (n == 0) exit(5);  // the tracker was to be there
}

int main(int argc, char** argv) {
    if (argc < 2) return 2;
    long close_at = argc >= 4 && strcmp(argv[2], "--close-tracker-at") == 0 ? atol(argv[3]) : -1;
    log_path = argv[1];
    if (argc >= 3 && strcmp(argv[2], "--own-uffd") == 0) make_own_uffd();

    int big = add_region(map_anon(NULL, BIG_PAGES), BIG_PAGES);
    for (size_t i = 0; i < BIG_PAGES; ++i) fill_page(regions[big].base + i * PAGE, i + 1);
    int doomed = add_region(map_anon(NULL, 256), 256);
    for (size_t i = 0; i < 256; ++i) fill_page(regions[doomed].base + i * PAGE, 7000 + i);
    int grown = add_region(map_anon(NULL, 256), 256);
    for (size_t i = 0; i < 256; ++i) fill_page(regions[grown].base + i * PAGE, 9000 + i);
    int fresh = -1;

    // A private writable mapping of a file, its first half written (private copies).
    char file_path[4096];
    snprintf(file_path, sizeof file_path, "%s.file", log_path);
    int ffd = open(file_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (ffd < 0) exit(9);
    static char page[PAGE];
    for (size_t i = 0; i < FILE_PAGES; ++i) {
        fill_page(page, 17000 + i);
        if (write(ffd, page, PAGE) != (ssize_t)PAGE) exit(9);
    }
    char* filemap = mmap(NULL, FILE_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, ffd, 0);
    if (filemap == MAP_FAILED) exit(9);
    close(ffd);  // no fd open across a dump: the mapping holds the file
    for (size_t i = 0; i < FILE_PAGES / 2; ++i) fill_page(filemap + i * PAGE, 19000 + i);
    add_region(filemap, FILE_PAGES);

    // The mapping that gets guard pages: hashed in three parts, the middle one (pages 4, 5)
    // until they become guards.
    guarded = map_anon(NULL, GUARDED_PAGES);
    for (size_t i = 0; i < GUARDED_PAGES; ++i) fill_page(guarded + i * PAGE, 21000 + i);
    add_region(guarded, 4);
    int guarded_mid = add_region(guarded + 4 * PAGE, 2);
    add_region(guarded + 6 * PAGE, GUARDED_PAGES - 6);

    for (long step = 0;; ++step) {
        if (step > 0) {
            // 1 % of the big region's pages written.
            struct region* b = &regions[big];
            for (size_t n = 0; n < BIG_PAGES / 100; ++n) {
                size_t i = next_rand() % b->pages;
                fill_page(b->base + i * PAGE, next_rand());
            }
            if (step == 2) {  // a region unmapped
                munmap(regions[doomed].base, regions[doomed].pages * PAGE);
                remove_region(doomed);
                if (grown == nregions) grown = doomed;
                doomed = -1;
            }
            if (step == 3) {  // a new mapping
                fresh = add_region(map_anon(NULL, 512), 512);
                for (size_t i = 0; i < 512; ++i) fill_page(regions[fresh].base + i * PAGE, 11000 + i);
                // Private copies of the file's pages dropped: the file's own content again.
                if (madvise(filemap, 8 * PAGE, MADV_DONTNEED) != 0) exit(10);
                for (size_t i = 40; i < 44; ++i) fill_page(filemap + i * PAGE, 23000 + i);
            }
            if (step == 4) {  // MADV_DONTNEED of some pages: zeros from now on
                for (size_t n = 0; n < 64; ++n) {
                    size_t i = next_rand() % b->pages;
                    madvise(b->base + i * PAGE, PAGE, MADV_DONTNEED);
                }
            }
            if (step == 5) {  // said either way: the driver requires them where the kernel has them
                if (madvise(guarded + 4 * PAGE, 2 * PAGE, MADV_GUARD_INSTALL) == 0) {
                    have_guards = 1;
                    guards_from = step;
                    regions[guarded_mid].pages = 0;  // no longer hashed (regions keep their indices)
                    say("guards installed at step %ld\n", step, 0);
                } else {
                    say("guards not installed at step %ld (errno %ld)\n", step, errno);
                }
            }
            if (step == 7 && have_guards) {  // one guard removed: a (zero) page, written
                if (madvise(guarded + 5 * PAGE, PAGE, MADV_GUARD_REMOVE) != 0) exit(11);
                guard_removed_from = step;
                fill_page(guarded + 5 * PAGE, 25000);
                regions[guarded_mid].base = guarded + 5 * PAGE;
                regions[guarded_mid].pages = 1;
            }
            if (step == 5) {  // grown with mremap (moved if it must), the new part written
                struct region* g = &regions[grown];
                char* p = mremap(g->base, g->pages * PAGE, 1024 * PAGE, MREMAP_MAYMOVE);
                if (p == MAP_FAILED) exit(6);
                g->base = p;
                for (size_t i = g->pages; i < 1024; i += 3) fill_page(p + i * PAGE, 13000 + i);
                g->pages = 1024;
            }
            if (step == 6) {  // part of the big region mapped anew at the same place, some of it written
                char* at = b->base + 4096 * PAGE;
                map_anon(at, 64);
                for (size_t i = 0; i < 64; i += 2) fill_page(at + i * PAGE, 15000 + i);
            }
            if (step == 7) {  // the new mapping moved elsewhere; its old place mapped anew, untouched
                struct region* f = &regions[fresh];
                char* to = mmap(NULL, f->pages * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                char* p = mremap(f->base, f->pages * PAGE, f->pages * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, to);
                if (p == MAP_FAILED) exit(7);
                char* old = f->base;
                f->base = p;
                map_anon(old, f->pages);
                add_region(old, f->pages);
            }
            if (step == 8) {  // dropped and written again, and a read-only stretch
                for (size_t n = 0; n < 32; ++n) {
                    size_t i = next_rand() % b->pages;
                    madvise(b->base + i * PAGE, PAGE, MADV_DONTNEED);
                    if (n % 2) fill_page(b->base + i * PAGE, next_rand());
                }
                mprotect(b->base + 8192 * PAGE, 16 * PAGE, PROT_READ);
            }
            if (step == 9) mprotect(b->base + 8192 * PAGE, 16 * PAGE, PROT_READ | PROT_WRITE);
            if (step == close_at) close_userfaultfds();
        }
        record(step);
        kill(getpid(), SIGSTOP);
        verify(step);
    }
}
