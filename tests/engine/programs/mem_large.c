/* mem_large: 768 MiB of private anonymous memory, every page of it data, restored exactly.
 *
 * Made for engine.mem_large.compress-rss (dump --compress, then a restore whose engine must stay
 * well below the data's size in memory: it decompresses block by block straight into the
 * process), so the data compresses well but not to nothing: every fourth page is random (each
 * 64 MiB block's zstd frame is then some 16 MiB, read in several pieces), the others a byte
 * repeated after a header naming the page. No two pages are the same.
 *
 * State checked after restore: every page exactly as written (each compared with a fresh
 * fill, naming the first page that differs). */
#include <string.h>
#include <sys/mman.h>

#include "testlib.h"

#define PAGE 4096ul
#define DATA_BYTES (768ul << 20)
#define PAGES (DATA_BYTES / PAGE)

/* Page i as written. */
static void fill_page(unsigned char* page, size_t i) {
    if (i % 4 == 0) {
        test_fill(page, PAGE, 1000 + i);
        return;
    }
    memset(page, (int)(i * 7 % 251) + 1, PAGE);
    uint64_t head[2] = {i, 0x6d656d5f6c617267ull ^ i};
    memcpy(page, head, sizeof head);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 2);

    unsigned char* data = test_mmap(NULL, DATA_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < PAGES; i++) fill_page(data + i * PAGE, i);

    test_ready();
    test_wait_check();

    /* 1: a byte of a random page changed; 2: of a repeated one. */
    if (test_corrupt(1)) data[(PAGES / 2) * PAGE + 100] ^= 1;
    if (test_corrupt(2)) data[(PAGES - 3) * PAGE + PAGE - 1] ^= 1;

    static unsigned char expect[PAGE];
    size_t bad = 0, first = PAGES;
    for (size_t i = 0; i < PAGES; i++) {
        fill_page(expect, i);
        if (memcmp(data + i * PAGE, expect, PAGE) != 0) {
            if (first == PAGES) first = i;
            bad++;
        }
    }
    CHECK(bad == 0, "%zu of %lu pages differ, the first page %zu", bad, PAGES, first);
    return test_finish();
}
