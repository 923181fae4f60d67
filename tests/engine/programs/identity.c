/* identity: who a process is and what it may do, as an unprivileged user (the runner starts
 * it as nobody with real uid/gid 65534 and effective 65533, groups 65534 and 100; the
 * program sets its saved ids back to 65534, so all three differ from their neighbours).
 *
 * State checked after restore: real/effective/saved uids and gids, supplementary groups,
 * no_new_privs, personality, umask, every rlimit (soft and hard, some lowered), comm name,
 * cwd, scheduler policy (SCHED_BATCH) and nice value (7), and a seccomp filter that still
 * makes getppid() fail with ENOTBLK (Seccomp: 2 with one filter in /proc/self/status), and
 * memory-deny-write-execute (PR_SET_MDWE, where the kernel has it): still set, and an
 * mprotect adding PROT_EXEC still refused; the parent-death signal (SIGUSR2, ignored: the
 * restored process's parent is the restorer), which a change of identity clears. */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <limits.h>
#include <sched.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/audit.h>

#include "testlib.h"

#define PERSONA (PER_LINUX | ADDR_NO_RANDOMIZE | UNAME26)

/* Linux 6.3 (older headers lack them). */
#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_GET_MDWE 66
#endif
#ifndef PR_MDWE_REFUSE_EXEC_GAIN
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif

static int install_seccomp(void) {
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOTBLK),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 14);
    setresuid((uid_t)-1, (uid_t)-1, getuid());
    setresgid((gid_t)-1, (gid_t)-1, getgid());
    uid_t ruid, euid, suid;
    gid_t rgid, egid, sgid;
    getresuid(&ruid, &euid, &suid);
    getresgid(&rgid, &egid, &sgid);
    gid_t groups[64];
    int ngroups = getgroups(64, groups);
    CHECK(euid != 0, "identity must run as an unprivileged user (the runner's --user nobody)");

    CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
    personality(PERSONA);
    umask(027);
    struct rlimit nofile = {200, 0}, core = {4096, 1 << 20};
    getrlimit(RLIMIT_NOFILE, &nofile);
    nofile.rlim_cur = nofile.rlim_cur > 200 ? 200 : nofile.rlim_cur;
    setrlimit(RLIMIT_NOFILE, &nofile);
    setrlimit(RLIMIT_CORE, &core);
    struct rlimit limits[RLIM_NLIMITS];
    for (int r = 0; r < RLIM_NLIMITS; r++) getrlimit(r, &limits[r]);
    prctl(PR_SET_NAME, "ckpt-identity");
    char cwd[PATH_MAX], cwd_now[PATH_MAX];
    test_data_path(cwd, sizeof cwd, "cwd-here");
    mkdir(cwd, 0755);
    if (chdir(cwd) != 0) test_fail("chdir %s: %s", cwd, strerror(errno));
    struct sched_param param = {0};
    CHECK(sched_setscheduler(0, SCHED_BATCH, &param) == 0, "SCHED_BATCH: %s", strerror(errno));
    CHECK(setpriority(PRIO_PROCESS, 0, 7) == 0, "nice 7: %s", strerror(errno));
    signal(SIGUSR2, SIG_IGN);
    CHECK(prctl(PR_SET_PDEATHSIG, SIGUSR2, 0, 0, 0) == 0, "PR_SET_PDEATHSIG: %s", strerror(errno));
    CHECK(install_seccomp() == 0, "seccomp: %s", strerror(errno));
    /* Last: it cannot be taken back. A kernel without it (EINVAL) checks nothing. */
    int mdwe = prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0 ? PR_MDWE_REFUSE_EXEC_GAIN : 0;
    if (!mdwe) CHECK(errno == EINVAL, "PR_SET_MDWE: %s", strerror(errno));
    char* page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(page != MAP_FAILED, "mmap: %s", strerror(errno));

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) setresuid((uid_t)-1, (uid_t)-1, geteuid());
    if (test_corrupt(2)) setresgid((gid_t)-1, (gid_t)-1, getegid());
    if (test_corrupt(3)) groups[0] = 1;
    if (test_corrupt(4)) personality(PER_LINUX);
    if (test_corrupt(5)) umask(022);
    if (test_corrupt(6)) setrlimit(RLIMIT_CORE, &(struct rlimit){2048, 1 << 20});
    if (test_corrupt(7)) prctl(PR_SET_NAME, "something-else");
    if (test_corrupt(8)) chdir("/");
    if (test_corrupt(9)) sched_setscheduler(0, SCHED_IDLE, &param);
    if (test_corrupt(10)) setpriority(PRIO_PROCESS, 0, 9);
    if (test_corrupt(11)) install_seccomp(); /* a second filter */
    if (test_corrupt(12)) ngroups--;
    /* It cannot be undone: what a restore without it would show is expected instead. */
    if (test_corrupt(13) && mdwe) mdwe = 0;
    if (test_corrupt(14)) prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);

    uid_t r, e, s;
    getresuid(&r, &e, &s);
    CHECK(r == ruid && e == euid && s == suid, "uids %u/%u/%u, expected %u/%u/%u", r, e, s, ruid,
          euid, suid);
    gid_t gr, ge, gs;
    getresgid(&gr, &ge, &gs);
    CHECK(gr == rgid && ge == egid && gs == sgid, "gids %u/%u/%u, expected %u/%u/%u", gr, ge, gs,
          rgid, egid, sgid);
    gid_t now_groups[64];
    int now_n = getgroups(64, now_groups);
    CHECK(now_n == ngroups && memcmp(now_groups, groups, sizeof(gid_t) * (size_t)ngroups) == 0,
          "supplementary groups changed (%d now, %d before)", now_n, ngroups);
    CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "no_new_privs is off");
    int persona = personality(0xffffffff);
    CHECK(persona == PERSONA, "personality %#x, expected %#x", persona, PERSONA);
    mode_t mask = umask(0);
    umask(mask);
    CHECK(mask == 027, "umask %03o, expected 027", mask);
    for (int i = 0; i < RLIM_NLIMITS; i++) {
        struct rlimit now;
        getrlimit(i, &now);
        CHECK(now.rlim_cur == limits[i].rlim_cur && now.rlim_max == limits[i].rlim_max,
              "rlimit %d: %llu/%llu, expected %llu/%llu", i, (unsigned long long)now.rlim_cur,
              (unsigned long long)now.rlim_max, (unsigned long long)limits[i].rlim_cur,
              (unsigned long long)limits[i].rlim_max);
    }
    char comm[32] = "", comm_file[32] = "";
    prctl(PR_GET_NAME, comm);
    test_read_text("/proc/self/comm", comm_file, sizeof comm_file);
    CHECK(strcmp(comm, "ckpt-identity") == 0 && strcmp(comm_file, "ckpt-identity\n") == 0,
          "comm is '%s', expected ckpt-identity", comm);
    CHECK(getcwd(cwd_now, sizeof cwd_now) && strcmp(cwd_now, cwd) == 0, "cwd is %s, expected %s",
          cwd_now, cwd);
    CHECK(sched_getscheduler(0) == SCHED_BATCH, "scheduler policy %d, expected SCHED_BATCH",
          sched_getscheduler(0));
    errno = 0;
    int nice_now = getpriority(PRIO_PROCESS, 0);
    CHECK(nice_now == 7, "nice %d, expected 7", nice_now);
    int mdwe_now = prctl(PR_GET_MDWE, 0, 0, 0, 0);
    if (mdwe_now < 0) mdwe_now = 0;
    CHECK(mdwe_now == mdwe, "memory-deny-write-execute flags %d, expected %d", mdwe_now, mdwe);
    if (page != MAP_FAILED) {
        int gained = mprotect(page, 4096, PROT_READ | PROT_WRITE | PROT_EXEC) == 0;
        CHECK(gained == !mdwe, "mprotect(PROT_EXEC) %s, expected it %s", gained ? "allowed" : "refused",
              mdwe ? "refused" : "allowed");
    }

    int pdeath = 0;
    prctl(PR_GET_PDEATHSIG, &pdeath, 0, 0, 0);
    CHECK(pdeath == SIGUSR2, "parent-death signal %d, expected %d", pdeath, SIGUSR2);
    errno = 0;
    long ppid = syscall(SYS_getppid);
    CHECK(ppid == -1 && errno == ENOTBLK, "seccomp filter gone: getppid gave %ld (%s)", ppid,
          strerror(errno));
    char mode[16] = "", filters[16] = "";
    test_status_field(0, "Seccomp", mode, sizeof mode);
    test_status_field(0, "Seccomp_filters", filters, sizeof filters);
    CHECK(strcmp(mode, "2") == 0 && strcmp(filters, "1") == 0,
          "seccomp mode %s with %s filters, expected 2 with 1", mode, filters);
    return test_finish();
}
