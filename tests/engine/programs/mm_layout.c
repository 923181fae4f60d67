/* mm_layout: the address space layout and the mm fields are exactly as before.
 *
 * State checked after restore:
 *  - /proc/self/maps is identical line by line (addresses, protections, offsets, files,
 *    [heap], [stack], thread-stack guard gaps, [vvar], [vvar_vclock], [vdso]);
 *  - the vDSO still works from its old address (clock_gettime and gettimeofday through
 *    it agree with the syscalls);
 *  - the mm fields of /proc/self/stat (start/end of code, data and brk, start of stack,
 *    arg and env areas) and the auxiliary vector (/proc/self/auxv, getauxval) are the same;
 *  - /proc/self/exe names the same executable. */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

static char maps_before[1 << 16], maps_after[1 << 16];
static char auxv_before[4096], auxv_after[4096];
static ssize_t auxv_len_before, auxv_len_after;

/* Fields 26-28 (start_code end_code start_stack) and 45-51 (start_data .. env_end) of
 * /proc/self/stat, as text. */
static void mm_fields(char* out, size_t size) {
    static char stat[4096];
    out[0] = '\0';
    if (test_read_text("/proc/self/stat", stat, sizeof stat) < 0) return;
    char* p = strrchr(stat, ')'); /* comm may contain spaces */
    if (!p) return;
    int field = 2;
    size_t o = 0;
    for (char* tok = strtok(p + 1, " \n"); tok; tok = strtok(NULL, " \n")) {
        field++;
        if ((field >= 26 && field <= 28) || (field >= 45 && field <= 51))
            o += (size_t)snprintf(out + o, size - o, "%d=%s ", field, tok);
    }
}

static void* idle_thread(void* arg) {
    (void)arg;
    for (;;) pause(); /* its stack and guard page are part of the layout */
    return NULL;
}

static int read_auxv(char* buf, ssize_t* len) {
    *len = test_read_text("/proc/self/auxv", buf, sizeof auxv_before);
    return *len > 0;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 5);
    pthread_t thread;
    pthread_create(&thread, NULL, idle_thread, NULL);

    char exe_before[PATH_MAX] = "", exe_after[PATH_MAX] = "";
    ssize_t n = readlink("/proc/self/exe", exe_before, sizeof exe_before - 1);
    if (n > 0) exe_before[n] = '\0';
    static char mm_before[1024], mm_after[1024];
    unsigned long vdso_before = getauxval(AT_SYSINFO_EHDR);
    read_auxv(auxv_before, &auxv_len_before);
    mm_fields(mm_before, sizeof mm_before);
    /* maps last: nothing may be mapped after it */
    test_read_text("/proc/self/maps", maps_before, sizeof maps_before);

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (test_corrupt(2)) auxv_before[8] ^= 1;
    if (test_corrupt(3)) mm_before[3] = 'X';
    if (test_corrupt(4)) exe_before[1] = 'X';
    if (test_corrupt(5)) {
        /* move the vDSO away: its old address no longer holds it */
        char line[512];
        unsigned long start, end;
        if (test_vma_line((void*)vdso_before, line, sizeof line) == 0 &&
            sscanf(line, "%lx-%lx", &start, &end) == 2) {
            void* to = mmap(NULL, end - start, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            syscall(SYS_mremap, start, end - start, end - start, MREMAP_MAYMOVE | MREMAP_FIXED, to);
        }
    }

    test_read_text("/proc/self/maps", maps_after, sizeof maps_after);
    if (strcmp(maps_before, maps_after) != 0) {
        /* report the first differing line */
        char *a = maps_before, *b = maps_after;
        while (*a && *a == *b) {
            a++;
            b++;
        }
        while (a > maps_before && a[-1] != '\n') a--, b--;
        char la[200], lb[200];
        sscanf(a, "%199[^\n]", la);
        sscanf(b, "%199[^\n]", lb);
        test_fail("maps differ: was '%s', now '%s'", *a ? la : "(end)", *b ? lb : "(end)");
    }

    char line[512];
    CHECK(test_vma_line((void*)vdso_before, line, sizeof line) == 0 && strstr(line, "[vdso]"),
          "[vdso] is no longer at %#lx", vdso_before);
    if (!test_failed()) {
        struct timespec v, s;
        clock_gettime(CLOCK_MONOTONIC, &v); /* through the vDSO */
        syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &s);
        long long diff = (s.tv_sec - v.tv_sec) * 1000000000ll + (s.tv_nsec - v.tv_nsec);
        CHECK(diff >= 0 && diff < 1000000000ll, "vDSO clock_gettime is off by %lld ns", diff);
        struct timeval tv;
        gettimeofday(&tv, NULL);
        CHECK(labs(tv.tv_sec - time(NULL)) <= 1, "vDSO gettimeofday disagrees with time()");
    }

    mm_fields(mm_after, sizeof mm_after);
    CHECK(strcmp(mm_before, mm_after) == 0, "mm fields of /proc/self/stat differ: was '%s', now '%s'",
          mm_before, mm_after);
    CHECK(read_auxv(auxv_after, &auxv_len_after) && auxv_len_after == auxv_len_before &&
              memcmp(auxv_before, auxv_after, (size_t)auxv_len_before) == 0,
          "/proc/self/auxv differs");
    CHECK(getauxval(AT_SYSINFO_EHDR) == vdso_before, "AT_SYSINFO_EHDR changed");

    n = readlink("/proc/self/exe", exe_after, sizeof exe_after - 1);
    if (n > 0) exe_after[n] = '\0';
    CHECK(strcmp(exe_before, exe_after) == 0, "/proc/self/exe is '%s', was '%s'", exe_after,
          exe_before);
    return test_finish();
}
