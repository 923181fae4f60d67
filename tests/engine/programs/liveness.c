/* liveness: a restored process keeps working normally.
 *
 * After restore the program forks a child (which exits 7 and is reaped), runs /bin/true
 * through fork + execve, creates and joins a thread, takes a signal in a handler, maps and
 * frees new memory, and grows its heap with malloc. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

static volatile sig_atomic_t got_signal;
static void on_usr1(int sig) { got_signal = sig; }
static void* thread_main(void* arg) { return (char*)arg + 1; }

static int wait_exit(pid_t pid) {
    int status = -1;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 4);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    test_ready();
    test_wait_check();

    pid_t child = fork();
    if (child == 0) _exit(test_corrupt(1) ? 8 : 7);
    int code = child > 0 ? wait_exit(child) : -1;
    CHECK(code == 7, "fork: the child exited %d, expected 7", code);

    pid_t exec_child = fork();
    if (exec_child == 0) {
        char* args[] = {test_corrupt(2) ? "/bin/false" : "/bin/true", NULL};
        execv(args[0], args);
        _exit(127);
    }
    code = exec_child > 0 ? wait_exit(exec_child) : -1;
    CHECK(code == 0, "exec of /bin/true: exit %d", code);

    pthread_t thread;
    char base = 0;
    void* ret = NULL;
    CHECK(pthread_create(&thread, NULL, thread_main, &base) == 0 && pthread_join(thread, &ret) == 0 &&
              ret == &base + 1 - test_corrupt(3),
          "pthread_create/join does not work");

    if (!test_corrupt(4)) raise(SIGUSR1);
    CHECK(got_signal == SIGUSR1, "the SIGUSR1 handler did not run");

    size_t len = 8 << 20;
    unsigned char* mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED, "mmap after restore: %s", strerror(errno));
    if (mem != MAP_FAILED) {
        test_fill(mem, len, 9);
        CHECK(test_verify(mem, len, 9) < 0, "new memory does not hold data");
        munmap(mem, len);
    }
    void* big = malloc(1 << 20);
    CHECK(big != NULL, "malloc after restore failed");
    free(big);
    return test_finish();
}
