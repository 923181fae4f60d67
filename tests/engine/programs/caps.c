/* caps: capabilities, securebits and the root directory of a root process.
 *
 * The program (run as root) drops CAP_SYS_BOOT and CAP_MKNOD from its bounding set, makes
 * its permitted set lack CAP_SYS_MODULE, its effective set also lack CAP_NET_ADMIN, sets
 * inheritable {CAP_NET_RAW, CAP_CHOWN}, raises CAP_NET_RAW in the ambient set, sets
 * securebits KEEP_CAPS | NO_SETUID_FIXUP, and chroots into its work directory.
 * State checked after restore: all five capability sets (by capget and prctl, /proc is not
 * visible in the chroot), the securebits, and that "/" is still the same directory. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "testlib.h"

#define SECBITS ((1 << SECURE_KEEP_CAPS) | (1 << SECURE_NO_SETUID_FIXUP))

struct capsets {
    uint64_t eff, prm, inh, bnd, amb;
};

static uint64_t bit(int cap) { return 1ull << cap; }

static struct capsets read_caps(void) {
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    syscall(SYS_capget, &hdr, data);
    struct capsets c = {0, 0, 0, 0, 0};
    c.eff = data[0].effective | (uint64_t)data[1].effective << 32;
    c.prm = data[0].permitted | (uint64_t)data[1].permitted << 32;
    c.inh = data[0].inheritable | (uint64_t)data[1].inheritable << 32;
    for (int cap = 0; cap < 64; cap++) {
        if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1) c.bnd |= bit(cap);
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0) == 1) c.amb |= bit(cap);
    }
    return c;
}

static int write_caps(uint64_t eff, uint64_t prm, uint64_t inh) {
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {
        {(uint32_t)eff, (uint32_t)prm, (uint32_t)inh},
        {(uint32_t)(eff >> 32), (uint32_t)(prm >> 32), (uint32_t)(inh >> 32)}};
    return (int)syscall(SYS_capset, &hdr, data);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 6);
    CHECK(geteuid() == 0, "caps must run as root");
    prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0);
    prctl(PR_CAPBSET_DROP, CAP_MKNOD, 0, 0, 0);
    struct capsets c = read_caps();
    uint64_t prm = c.prm & ~bit(CAP_SYS_MODULE);
    uint64_t eff = prm & ~bit(CAP_NET_ADMIN);
    uint64_t inh = bit(CAP_NET_RAW) | bit(CAP_CHOWN);
    CHECK(write_caps(eff, prm, inh) == 0, "capset: %s", strerror(errno));
    CHECK(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_RAW, 0, 0) == 0, "ambient raise: %s",
          strerror(errno));
    CHECK(prctl(PR_SET_SECUREBITS, SECBITS, 0, 0, 0) == 0, "PR_SET_SECUREBITS: %s", strerror(errno));
    struct capsets want = read_caps();

    /* chroot into the directory holding the result file, and write the verdict from there */
    char dir[PATH_MAX], base[PATH_MAX], inside[PATH_MAX + 2];
    snprintf(dir, sizeof dir, "%s", test_result_path());
    snprintf(base, sizeof base, "%s", test_result_path());
    snprintf(inside, sizeof inside, "/%s", basename(base));
    struct stat root_before;
    stat(dirname(dir), &root_before);
    CHECK(chroot(dir) == 0 && chdir("/") == 0, "chroot %s: %s", dir, strerror(errno));
    test_set_result_path(inside);

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) write_caps(eff & ~bit(CAP_KILL), prm, inh);
    if (test_corrupt(2)) prctl(PR_CAPBSET_DROP, CAP_SYSLOG, 0, 0, 0);
    if (test_corrupt(3)) prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER, CAP_NET_RAW, 0, 0);
    if (test_corrupt(4)) prctl(PR_SET_SECUREBITS, 1 << SECURE_KEEP_CAPS, 0, 0, 0);
    if (test_corrupt(5)) write_caps(eff, prm, inh & ~bit(CAP_CHOWN));
    if (test_corrupt(6)) root_before.st_ino++;

    struct capsets now = read_caps();
    CHECK(now.eff == want.eff, "effective caps %#llx, expected %#llx", (unsigned long long)now.eff,
          (unsigned long long)want.eff);
    CHECK(now.prm == want.prm, "permitted caps %#llx, expected %#llx", (unsigned long long)now.prm,
          (unsigned long long)want.prm);
    CHECK(now.inh == want.inh, "inheritable caps %#llx, expected %#llx",
          (unsigned long long)now.inh, (unsigned long long)want.inh);
    CHECK(now.bnd == want.bnd, "bounding set %#llx, expected %#llx", (unsigned long long)now.bnd,
          (unsigned long long)want.bnd);
    CHECK(now.amb == want.amb, "ambient caps %#llx, expected %#llx", (unsigned long long)now.amb,
          (unsigned long long)want.amb);
    int secbits = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
    CHECK(secbits == SECBITS, "securebits %#x, expected %#x", secbits, SECBITS);
    struct stat root_now;
    CHECK(stat("/", &root_now) == 0 && root_now.st_ino == root_before.st_ino &&
              root_now.st_dev == root_before.st_dev,
          "the root directory changed (inode %lu, expected %lu)", (unsigned long)root_now.st_ino,
          (unsigned long)root_before.st_ino);
    return test_finish();
}
