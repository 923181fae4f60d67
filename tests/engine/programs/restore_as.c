/* restore_as: the victim of restore_as_user_test.py (forged images restored with
 * --restore-as), run as an unprivileged user.
 *
 * It holds two files of its data folder open read-only (fds 10 and 11: the test points them
 * at root-only files in the images) and has a folder `jail` (the test makes it the root).
 * State checked after restore: uids and gids as they were, still not root, no capability in
 * any set, fds 10 and 11 open, the ordinary scheduling policy and a nice value not below the
 * one it started with. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"

static void hold(const char* name, int at) {
    char path[4096];
    test_data_path(path, sizeof path, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, "held\n", 5) != 5) test_fail("creating %s: %s", path, strerror(errno));
    close(fd);
    fd = open(path, O_RDONLY);
    if (fd < 0 || dup2(fd, at) != at)
        test_fail("opening %s at fd %d: %s", path, at, strerror(errno));
    close(fd);
}

static int no_caps(void) {
    static const char* const sets[] = {"CapInh", "CapPrm", "CapEff", "CapAmb"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        char v[64] = "";
        test_status_field(0, sets[i], v, sizeof v);
        if (strtoull(v, NULL, 16) != 0) {
            test_fail("%s is %s after restore, expected none", sets[i], v);
            return 0;
        }
    }
    return 1;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 4);
    uid_t ruid, euid, suid;
    gid_t rgid, egid, sgid;
    getresuid(&ruid, &euid, &suid);
    getresgid(&rgid, &egid, &sgid);
    CHECK(ruid != 0 && euid != 0 && suid != 0, "restore_as must run as an unprivileged user");
    hold("held-a", 10);
    hold("held-b", 11);
    char jail[4096];
    test_data_path(jail, sizeof jail, "jail");
    mkdir(jail, 0755);
    errno = 0;
    int nice_before = getpriority(PRIO_PROCESS, 0);

    test_ready();
    test_wait_check();

    uid_t r, e, s;
    gid_t gr, ge, gs;
    getresuid(&r, &e, &s);
    getresgid(&gr, &ge, &gs);
    if (test_corrupt(1)) ruid++;
    CHECK(r == ruid && e == euid && s == suid, "uids %u/%u/%u, expected %u/%u/%u", r, e, s, ruid,
          euid, suid);
    if (test_corrupt(2)) egid++;
    CHECK(gr == rgid && ge == egid && gs == sgid, "gids %u/%u/%u, expected %u/%u/%u", gr, ge, gs,
          rgid, egid, sgid);
    if (test_corrupt(3)) close(10);
    CHECK(fcntl(10, F_GETFD) >= 0 && fcntl(11, F_GETFD) >= 0, "fds 10 and 11 are not both open");
    if (test_corrupt(4)) nice_before++;
    errno = 0;
    int nice_now = getpriority(PRIO_PROCESS, 0);
    CHECK(sched_getscheduler(0) == SCHED_OTHER && nice_now >= nice_before,
          "scheduling: policy %d nice %d, expected SCHED_OTHER with nice >= %d",
          sched_getscheduler(0), nice_now, nice_before);
    no_caps();
    return test_finish();
}
