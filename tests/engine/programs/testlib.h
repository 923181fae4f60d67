/* Shared helper of the engine conformance programs.
 *
 * Protocol between a program and tests/engine/run_engine_test.py:
 *   prog RESULT_FILE            the runner starts it (own session, stdin /dev/null,
 *                               stdout/stderr to a log file)
 *   prog --corruptions          prints how many corruption points the program has
 *   1. the program sets up its state, then test_ready() creates RESULT_FILE.ready;
 *   2. it sleeps in test_wait_check() until SIGTERM (the runner dumps and restores it
 *      meanwhile; SIGTERM is blocked outside that wait, in every thread, so a signal
 *      arriving while the engine holds the tree stays pending and is not lost);
 *   3. it checks its state and test_finish() writes "PASS" or "FAIL: reason" to
 *      RESULT_FILE and returns the exit code (0 or 1).
 * No fd, pipe or mapping of the protocol stays open across the dump: only files by path.
 *
 * Self-test: with CKPT_TEST_CORRUPT=N in the environment, test_corrupt(N) is true at the
 * program's N-th corruption point, which damages the state (or the expectation) right
 * before it is checked. The runner's `corrupt` mode expects FAIL for every N: a check
 * that cannot fail proves nothing. */
#ifndef CKPT_ENGINE_TESTLIB_H
#define CKPT_ENGINE_TESTLIB_H


#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Parses argv, blocks SIGTERM and installs the check handler. `corruptions` is the number
 * of corruption points the program implements (1..corruptions). */
void test_init(int argc, char** argv, int corruptions);

/* Directory for the program's own files (created, next to the result file). */
const char* test_data_dir(void);
/* Writes "<data dir>/<name>" into buf. */
void test_data_path(char* buf, size_t size, const char* name);
/* The result file path; a program that chroots can point it at the new view. */
const char* test_result_path(void);
void test_set_result_path(const char* path);

void test_ready(void);
void test_wait_check(void);

/* True when corruption point n is selected for this run. */
int test_corrupt(int n);

/* Records a failure (the first reason is reported, later ones counted) and logs it. */
void test_fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
int test_failed(void);
#define CHECK(cond, ...)                  \
    do {                                  \
        if (!(cond)) test_fail(__VA_ARGS__); \
    } while (0)

/* Root process: writes the verdict, returns the exit code for main. */
int test_finish(void);
/* Child process of a tree: exits 0 or 1 (its reasons are in the log). */
void test_child_exit(void) __attribute__((noreturn));
/* Waits for a child and fails unless it exited 0. */
void test_expect_child_ok(pid_t pid, const char* role);

/* An AF_UNIX socketpair of the type at fds a and b. */
void test_socketpair_at(int type, int a, int b);
/* Socket filters (SO_ATTACH_FILTER): attaches n classic BPF instructions to fd (fails the test
 * if it cannot); whether fd's filter is exactly them (SO_GET_FILTER); detaches fd's filter
 * (a corruption point). */
struct sock_filter;
void test_attach_filter(int fd, const struct sock_filter* code, unsigned n);
int test_filter_is(int fd, const struct sock_filter* code, unsigned n);
void test_detach_filter(int fd);
/* Sends fd over the AF_UNIX socket sock (SCM_RIGHTS) with one byte; fails the test if it cannot. */
void test_send_fd(int sock, int fd);
/* The pid a pidfd names as this process's pid namespace sees it (PIDFD_GET_INFO, Linux
 * 6.13); -errno when it cannot be read. */
long test_pidfd_pid(int pidfd);

/* One-shot start-up barrier between a parent and a child; both pipe ends are closed once
 * used, so nothing of it survives into the dump. */
typedef struct {
    int rd, wr;
} test_sync_t;
void test_sync_init(test_sync_t* s);
void test_sync_signal(test_sync_t* s); /* child: "I am set up" */
void test_sync_wait(test_sync_t* s);   /* parent */

/* Deterministic data. */
uint64_t test_rand_next(uint64_t* state);
void test_fill(void* buf, size_t len, uint64_t seed);
/* Offset of the first byte differing from test_fill(seed), or -1. */
ptrdiff_t test_verify(const void* buf, size_t len, uint64_t seed);
uint64_t test_hash(const void* buf, size_t len);
/* 1 when every byte of [p, p + len) is zero. */
int test_is_zero(const void* p, size_t len);
/* mmap that fails the test and exits when the mapping cannot be made (a setup error). */
void* test_mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off);

/* Reads a whole small file with plain syscalls (no malloc, so the memory layout of the
 * caller does not change); returns the length or -1. The text is NUL-terminated. */
ssize_t test_read_text(const char* path, char* buf, size_t size);
/* Reads exactly len bytes from a pipe, FIFO or socket (blocking or not), giving up when
 * nothing comes for 3 s; 1 when all came. */
int test_read_all(int fd, void* buf, size_t len);
/* Value of "Key:" in /proc/self/status (or /proc/PID/status), copied without spaces. */
int test_status_field(pid_t pid, const char* key, char* out, size_t size);

uint64_t test_now_ns(void); /* CLOCK_MONOTONIC */

/* True when the mounted /proc shows pids of our own pid namespace. After a restore with
 * --new-pidns it is the host's /proc: /proc/self still works, /proc/PID of other processes
 * and the pids inside /proc files are host pids. */
int test_proc_is_ours(void);

/* The /proc/self/maps line of the mapping containing addr (without newline); -1 if none. */
int test_vma_line(const void* addr, char* line, size_t size);
/* Its permission string ("rw-p"), or "" when addr is not mapped. */
void test_vma_perms(const void* addr, char perms[5]);
/* The value after "Key:" in the /proc/self/smaps entry containing addr ("" when none). */
void test_smaps_field(const void* addr, const char* key, char* out, size_t size);
/* Its VmFlags line. */
void test_vma_flags(const void* addr, char* out, size_t size);
/* Whether its VmFlags have flag (two letters: "lo", "dc"). */
int test_has_vma_flag(const void* addr, const char* flag);

#endif
