/* shell_job: a job of an interactive shell, dumped and restored with --shell-job.
 *
 * The runner starts the program in its own process group inside a "shell" session whose
 * controlling terminal is a pty, with that terminal as stdin and stdout. At restore the job
 * joins the restoring shell's session and terminal. State checked after restore: stdin and
 * stdout are terminals, the process has a controlling terminal (/dev/tty opens, tty_nr in
 * /proc/self/stat, tcgetsid gives its session), it is still the leader of its own process
 * group inside a session it does not lead, and a marker written to /dev/tty reaches the
 * runner through the pty. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "testlib.h"

int main(int argc, char** argv) {
    test_init(argc, argv, 3);
    pid_t pid = getpid();
    CHECK(isatty(0) && isatty(1), "the runner should give a terminal (--shell-job)");
    CHECK(getsid(0) != pid && getpgid(0) == pid,
          "the runner should start a job: own process group, the shell's session");
    test_ready();
    test_wait_check();

    if (test_corrupt(1)) dup2(open("/dev/null", O_RDWR), 1);
    if (test_corrupt(2)) ioctl(0, TIOCNOTTY);
    if (test_corrupt(3)) pid++;

    CHECK(isatty(0) && isatty(1), "stdin/stdout are not terminals any more");
    CHECK(getpgid(0) == pid, "process group %d, expected its own (%d)", getpgid(0), pid);
    CHECK(getsid(0) != getpid(), "the job became a session leader");
    char stat[1024];
    int tty_nr = 0;
    if (test_read_text("/proc/self/stat", stat, sizeof stat) > 0) {
        char* p = strrchr(stat, ')');
        if (p) sscanf(p + 2, "%*c %*d %*d %*d %d", &tty_nr);
    }
    CHECK(tty_nr != 0, "no controlling terminal in /proc/self/stat");
    CHECK(tcgetsid(0) == getsid(0), "the terminal belongs to session %d, not ours (%d)",
          tcgetsid(0), getsid(0));
    int tty = open("/dev/tty", O_WRONLY | O_CLOEXEC);
    CHECK(tty >= 0, "/dev/tty cannot be opened: no controlling terminal");
    if (tty >= 0) {
        CHECK(write(tty, "marker tty\n", 11) == 11, "cannot write to /dev/tty");
        close(tty);
    }
    return test_finish();
}
