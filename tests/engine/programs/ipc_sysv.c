/* ipc_sysv: System V IPC in the tree's own IPC namespace (run as root: unshare(CLONE_NEWIPC)
 * first).
 *
 * State set up (ids made non-trivial first: objects made and removed, so that a fresh
 * namespace would hand out other ids):
 *  - segment A (key 0x1a5a, 64 KiB, mode 0640, owner 4242:4343) attached read-write by the
 *    parent and (inherited by fork) by its child: the parent wrote the first half, the child
 *    the second;
 *  - segment B (key 0x1a5b, 8 KiB) attached SHM_RDONLY by the parent, content written before;
 *  - segment C (private key, 1 MiB) attached by nobody, three pages written (the rest never
 *    touched);
 *  - segment D (key 0x1a5d, 4 pages) attached by the parent (and, by fork, the child),
 *    IPC_RMID called: SHM_DEST, key 0; B is the child's too by fork;
 *  - a set of 4 semaphores (key 0x5e5, created with euid 1001 / egid 1002, owner 4242:4343,
 *    mode 0660) [child go, parent go, 7, 42]: the child is blocked on "child go" at the dump;
 *  - a message queue (key 0x3e55, mode 0620, qbytes 20000) holding 4 messages of types 1, 2,
 *    1, 5 (one of 3000 binary bytes);
 *  - the namespace's sysctls msgmnb 30000, msgmni 77, sem "250 32000 33 128".
 * Checked after restore: every id, key, mode, owner, creator, size, nattch, SHM_DEST, the
 * contents (both halves of A seen by both processes, C's untouched pages zero), B refusing
 * mprotect(PROT_WRITE), semaphore values, the messages in order and by type, the sysctls;
 * then that they work: the parent releases the child through the semaphore, each writes into
 * A what the other then reads, the child answers through the semaphore and a new message.
 *
 * Built with SEM_UNDO_USED (ipc_sysv_undo, only for the negative test ipc-refused): in its own
 * namespace, a semaphore raised with SEM_UNDO: its undo adjustment cannot be read, so the dump
 * must refuse the process by name.
 * Built with HOST_NS (ipc_sysv_host, only for the negative test sysv-host-ns): no namespace
 * of its own, one private segment attached (removed at once, so nothing outlives the test)
 * in the host's IPC namespace: the dump must refuse it naming the pid and the mapping. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

#define PAGE 4096ul
#define A_SIZE (64 * 1024ul)
#define B_SIZE (8 * 1024ul)
#define C_SIZE (1024 * 1024ul)
#define D_SIZE (4 * PAGE)
#define A_TOKEN (A_SIZE - 16) /* parent -> child after restore */
#define A_ANSWER (A_SIZE - 8) /* child -> parent */

#if defined(SEM_UNDO_USED)
int main(int argc, char** argv) {
    test_init(argc, argv, 1);
    if (geteuid() != 0 || unshare(CLONE_NEWIPC) != 0) {
        test_fail("ipc_sysv_undo must run as root (unshare(CLONE_NEWIPC): %s)", strerror(errno));
        return test_finish();
    }
    int id = semget(IPC_PRIVATE, 1, 0600);
    struct sembuf op = {0, 1, SEM_UNDO};
    if (id < 0 || semop(id, &op, 1) != 0) {
        test_fail("semget/semop(SEM_UNDO): %s", strerror(errno));
        return test_finish();
    }
    test_ready();
    test_wait_check();
    if (test_corrupt(1)) semop(id, &op, 1);
    CHECK(semctl(id, 0, GETVAL) == 1, "the semaphore's value changed");
    return test_finish();
}
#elif defined(HOST_NS)
int main(int argc, char** argv) {
    test_init(argc, argv, 1);
    int id = shmget(IPC_PRIVATE, B_SIZE, IPC_CREAT | 0600);
    unsigned char* p = id < 0 ? (void*)-1 : shmat(id, NULL, 0);
    if (p == (void*)-1) {
        test_fail("shmget/shmat: %s", strerror(errno));
        return test_finish();
    }
    shmctl(id, IPC_RMID, NULL); /* gone with the process */
    test_fill(p, B_SIZE, 19);
    test_ready();
    test_wait_check();
    if (test_corrupt(1)) p[3] ^= 1;
    CHECK(test_verify(p, B_SIZE, 19) < 0, "the segment's content changed");
    return test_finish();
}
#else
enum { SEM_CHILD_GO, SEM_PARENT_GO, SEM_SEVEN, SEM_FORTY_TWO, NSEMS };

union semun {
    int val;
    struct semid_ds* buf;
    unsigned short* array;
};

struct msgbuf_big {
    long type;
    char text[4096];
};

static int id_a, id_b, id_c, id_d, id_sem, id_msg;
static unsigned char *a, *b, *d;

static int sem_change(int num, int delta) {
    struct sembuf op = {(unsigned short)num, (short)delta, 0};
    int r;
    while ((r = semop(id_sem, &op, 1)) != 0 && errno == EINTR) {
    }
    return r;
}

static void write_sysctl(const char* name, const char* value) {
    char path[256];
    snprintf(path, sizeof path, "/proc/sys/kernel/%s", name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, value, strlen(value)) != (ssize_t)strlen(value)) test_fail("write %s: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
}

static void check_sysctl(const char* name, const char* want) {
    char path[256], text[256];
    snprintf(path, sizeof path, "/proc/sys/kernel/%s", name);
    ssize_t n = test_read_text(path, text, sizeof text);
    if (n < 0) {
        test_fail("read %s", path);
        return;
    }
    for (char* p = text; *p; ++p)
        if (*p == '\t') *p = ' ';
    if (n > 0 && text[n - 1] == '\n') text[n - 1] = 0;
    CHECK(strcmp(text, want) == 0, "kernel.%s is '%s', not '%s'", name, text, want);
}

static void check_shm(int id, int want_id, key_t key, unsigned mode, uid_t uid, gid_t gid, size_t size, unsigned long nattch,
                      int dest, const char* name) {
    struct shmid_ds ds;
    CHECK(id == want_id, "segment %s: id %d, was %d", name, id, want_id);
    if (shmctl(id, IPC_STAT, &ds) != 0) {
        test_fail("segment %s: IPC_STAT: %s", name, strerror(errno));
        return;
    }
    CHECK(ds.shm_perm.__key == key, "segment %s: key %#x, not %#x", name, ds.shm_perm.__key, key);
    CHECK((ds.shm_perm.mode & 0777) == mode, "segment %s: mode %o, not %o", name, ds.shm_perm.mode & 0777, mode);
    CHECK(ds.shm_perm.uid == uid && ds.shm_perm.gid == gid, "segment %s: owner %u:%u, not %u:%u", name,
          ds.shm_perm.uid, ds.shm_perm.gid, uid, gid);
    CHECK(ds.shm_perm.cuid == 0 && ds.shm_perm.cgid == 0, "segment %s: creator %u:%u, not 0:0", name,
          ds.shm_perm.cuid, ds.shm_perm.cgid);
    CHECK(ds.shm_segsz == size, "segment %s: size %zu, not %zu", name, (size_t)ds.shm_segsz, size);
    CHECK(ds.shm_nattch == nattch, "segment %s: nattch %lu, not %lu", name, (unsigned long)ds.shm_nattch, nattch);
    CHECK(!!(ds.shm_perm.mode & SHM_DEST) == dest, "segment %s: SHM_DEST %s", name, dest ? "lost" : "set");
}

static void child_main(void) {
    /* The second half of A, then wait for the parent's go (blocked here at the dump). */
    test_fill(a + A_SIZE / 2, A_SIZE / 2 - 16, 12);
    if (sem_change(SEM_PARENT_GO, 1) != 0) test_fail("child: semop: %s", strerror(errno));
    if (sem_change(SEM_CHILD_GO, -1) != 0) test_fail("child: semop wait: %s", strerror(errno));
    if (test_corrupt(9)) a[A_SIZE / 2] ^= 1;
    CHECK(test_verify(a, A_SIZE / 2, 11) < 0, "child: the parent's half of segment A changed");
    CHECK(test_verify(a + A_SIZE / 2, A_SIZE / 2 - 16, 12) < 0, "child: its half of segment A changed");
    uint64_t token;
    memcpy(&token, a + A_TOKEN, 8);
    CHECK(token != 0, "child: no token from the parent in segment A");
    token += 1;
    memcpy(a + A_ANSWER, &token, 8);
    struct msgbuf_big m = {77, "from the child"};
    if (msgsnd(id_msg, &m, strlen(m.text) + 1, IPC_NOWAIT) != 0) test_fail("child: msgsnd: %s", strerror(errno));
    if (sem_change(SEM_PARENT_GO, 1) != 0) test_fail("child: semop: %s", strerror(errno));
    test_child_exit();
}

static void make_gaps(void) {
    /* Objects made and removed: the next ids are not a fresh namespace's. */
    for (int i = 0; i < 3; i++) {
        int s = shmget(IPC_PRIVATE, PAGE, 0600);
        int q = msgget(IPC_PRIVATE, 0600);
        int m = semget(IPC_PRIVATE, 1, 0600);
        if (s < 0 || q < 0 || m < 0) test_fail("making gaps: %s", strerror(errno));
        shmctl(s, IPC_RMID, NULL);
        msgctl(q, IPC_RMID, NULL);
        semctl(m, 0, IPC_RMID);
    }
}

int main(int argc, char** argv) {
    test_init(argc, argv, 10);
    if (geteuid() != 0 || unshare(CLONE_NEWIPC) != 0) {
        test_fail("ipc_sysv must run as root (unshare(CLONE_NEWIPC): %s)", strerror(errno));
        return test_finish();
    }
    write_sysctl("msgmnb", "30000");
    write_sysctl("msgmni", "77");
    write_sysctl("sem", "250 32000 33 128");
    make_gaps();

    id_a = shmget(0x1a5a, A_SIZE, IPC_CREAT | IPC_EXCL | 0600);
    id_b = shmget(0x1a5b, B_SIZE, IPC_CREAT | IPC_EXCL | 0644);
    id_c = shmget(IPC_PRIVATE, C_SIZE, IPC_CREAT | 0600);
    id_d = shmget(0x1a5d, D_SIZE, IPC_CREAT | IPC_EXCL | 0666);
    if (id_a < 0 || id_b < 0 || id_c < 0 || id_d < 0) {
        test_fail("shmget: %s", strerror(errno));
        return test_finish();
    }
    struct shmid_ds sds;
    shmctl(id_a, IPC_STAT, &sds);
    sds.shm_perm.uid = 4242;
    sds.shm_perm.gid = 4343;
    sds.shm_perm.mode = 0640;
    if (shmctl(id_a, IPC_SET, &sds) != 0) test_fail("IPC_SET A: %s", strerror(errno));
    a = shmat(id_a, NULL, 0);
    unsigned char* tmp = shmat(id_b, NULL, 0);
    unsigned char* c = shmat(id_c, NULL, 0);
    d = shmat(id_d, NULL, 0);
    if (a == (void*)-1 || tmp == (void*)-1 || c == (void*)-1 || d == (void*)-1) {
        test_fail("shmat: %s", strerror(errno));
        return test_finish();
    }
    test_fill(a, A_SIZE / 2, 11);
    test_fill(tmp, B_SIZE, 13);
    shmdt(tmp);
    b = shmat(id_b, NULL, SHM_RDONLY);
    test_fill(c, PAGE, 14);
    test_fill(c + 100 * PAGE, PAGE, 15);
    test_fill(c + 255 * PAGE, PAGE, 16);
    shmdt(c);
    test_fill(d, D_SIZE, 17);
    if (shmctl(id_d, IPC_RMID, NULL) != 0) test_fail("IPC_RMID D: %s", strerror(errno));

    /* The semaphore set, made by another creator. */
    if (setresgid(-1, 1002, -1) != 0 || setresuid(-1, 1001, -1) != 0) test_fail("set creator: %s", strerror(errno));
    id_sem = semget(0x5e5, NSEMS, IPC_CREAT | IPC_EXCL | 0600);
    int saved = errno;
    if (setresuid(-1, 0, -1) != 0 || setresgid(-1, 0, -1) != 0) test_fail("back to root: %s", strerror(errno));
    if (id_sem < 0) {
        test_fail("semget: %s", strerror(saved));
        return test_finish();
    }
    unsigned short init[NSEMS] = {0, 0, 7, 42};
    union semun arg;
    arg.array = init;
    if (semctl(id_sem, 0, SETALL, arg) != 0) test_fail("SETALL: %s", strerror(errno));
    struct semid_ds semds;
    arg.buf = &semds;
    semctl(id_sem, 0, IPC_STAT, arg);
    semds.sem_perm.uid = 4242;
    semds.sem_perm.gid = 4343;
    semds.sem_perm.mode = 0660;
    if (semctl(id_sem, 0, IPC_SET, arg) != 0) test_fail("sem IPC_SET: %s", strerror(errno));

    /* The message queue. */
    id_msg = msgget(0x3e55, IPC_CREAT | IPC_EXCL | 0620);
    if (id_msg < 0) {
        test_fail("msgget: %s", strerror(errno));
        return test_finish();
    }
    struct msqid_ds mds;
    msgctl(id_msg, IPC_STAT, &mds);
    mds.msg_qbytes = 20000;
    if (msgctl(id_msg, IPC_SET, &mds) != 0) test_fail("msg IPC_SET: %s", strerror(errno));
    static struct msgbuf_big m1 = {1, "alpha"}, m2 = {2, "beta beta"}, m3 = {1, "gamma"}, m4 = {5, ""};
    test_fill(m4.text, 3000, 18);
    if (msgsnd(id_msg, &m1, 6, 0) || msgsnd(id_msg, &m2, 10, 0) || msgsnd(id_msg, &m3, 6, 0) ||
        msgsnd(id_msg, &m4, 3000, 0))
        test_fail("msgsnd: %s", strerror(errno));

    pid_t child = fork();
    if (child == 0) child_main();
    /* The child has written its half and waits on the semaphore. */
    if (sem_change(SEM_PARENT_GO, -1) != 0) test_fail("semop wait for the child: %s", strerror(errno));
    const int want_a = id_a, want_b = id_b, want_c = id_c, want_d = id_d, want_sem = id_sem, want_msg = id_msg;
    test_ready();
    test_wait_check();

    /* Segments. */
    int expect_a = want_a;
    if (test_corrupt(2)) expect_a ^= 1;
    check_shm(id_a, expect_a, 0x1a5a, 0640, 4242, 4343, A_SIZE, 2, 0, "A");
    check_shm(id_b, want_b, 0x1a5b, 0644, 0, 0, B_SIZE, 2, 0, "B");
    check_shm(id_c, want_c, IPC_PRIVATE, 0600, 0, 0, C_SIZE, 0, 0, "C");
    check_shm(id_d, want_d, IPC_PRIVATE, 0666, 0, 0, D_SIZE, 2, !test_corrupt(5), "D");
    if (test_corrupt(1)) a[7] ^= 1;
    CHECK(test_verify(a, A_SIZE / 2, 11) < 0, "the parent's half of segment A changed");
    CHECK(test_verify(a + A_SIZE / 2, A_SIZE / 2 - 16, 12) < 0, "the child's half of segment A changed");
    CHECK(test_verify(b, B_SIZE, 13) < 0, "segment B (read-only) changed");
    int wrote = mprotect(b, B_SIZE, PROT_READ | PROT_WRITE) == 0;
    if (test_corrupt(3)) wrote = !wrote;
    CHECK(!wrote && errno == EACCES, "segment B, attached SHM_RDONLY, can be made writable");
    c = shmat(id_c, NULL, test_corrupt(4) ? 0 : SHM_RDONLY);
    if (c == (void*)-1) {
        test_fail("shmat C: %s", strerror(errno));
    } else {
        if (test_corrupt(4)) c[50 * PAGE] = 1;
        CHECK(test_verify(c, PAGE, 14) < 0 && test_verify(c + 100 * PAGE, PAGE, 15) < 0 &&
                  test_verify(c + 255 * PAGE, PAGE, 16) < 0,
              "segment C (not attached): content changed");
        CHECK(test_is_zero(c + PAGE, 99 * PAGE) && test_is_zero(c + 101 * PAGE, 154 * PAGE),
              "segment C: pages never written are not zero");
        shmdt(c);
    }
    CHECK(test_verify(d, D_SIZE, 17) < 0, "segment D (marked for destruction): content changed");

    /* Semaphores: the creator too. */
    CHECK(id_sem == want_sem, "semaphore set id %d, was %d", id_sem, want_sem);
    if (test_corrupt(6)) {
        arg.val = 8;
        semctl(id_sem, SEM_SEVEN, SETVAL, arg);
    }
    unsigned short vals[NSEMS] = {9, 9, 9, 9};
    arg.array = vals;
    if (semctl(id_sem, 0, GETALL, arg) != 0) test_fail("GETALL: %s", strerror(errno));
    CHECK(vals[0] == 0 && vals[1] == 0 && vals[2] == 7 && vals[3] == 42, "semaphore values %u %u %u %u, not 0 0 7 42",
          vals[0], vals[1], vals[2], vals[3]);
    arg.buf = &semds;
    if (semctl(id_sem, 0, IPC_STAT, arg) != 0) test_fail("sem IPC_STAT: %s", strerror(errno));
    unsigned want_cuid = test_corrupt(10) ? 0 : 1001;
    CHECK(semds.sem_perm.__key == 0x5e5 && (semds.sem_perm.mode & 0777) == 0660 && semds.sem_perm.uid == 4242 &&
              semds.sem_perm.gid == 4343 && semds.sem_perm.cuid == want_cuid && semds.sem_perm.cgid == 1002 &&
              semds.sem_nsems == NSEMS,
          "semaphore set: key %#x mode %o owner %u:%u creator %u:%u nsems %lu", semds.sem_perm.__key,
          semds.sem_perm.mode & 0777, semds.sem_perm.uid, semds.sem_perm.gid, semds.sem_perm.cuid,
          semds.sem_perm.cgid, (unsigned long)semds.sem_nsems);

    /* Messages: by type first, then in order. */
    CHECK(id_msg == want_msg, "message queue id %d, was %d", id_msg, want_msg);
    static struct msgbuf_big got;
    if (test_corrupt(7)) msgrcv(id_msg, &got, sizeof got.text, 0, IPC_NOWAIT);
    if (msgctl(id_msg, IPC_STAT, &mds) != 0) test_fail("msg IPC_STAT: %s", strerror(errno));
    CHECK(mds.msg_perm.__key == 0x3e55 && (mds.msg_perm.mode & 0777) == 0620 && mds.msg_qbytes == 20000 &&
              mds.msg_qnum == 4 && mds.__msg_cbytes == 3022,
          "message queue: key %#x mode %o qbytes %lu, %lu messages of %lu bytes", mds.msg_perm.__key,
          mds.msg_perm.mode & 0777, (unsigned long)mds.msg_qbytes, (unsigned long)mds.msg_qnum,
          (unsigned long)mds.__msg_cbytes);
    ssize_t n = msgrcv(id_msg, &got, sizeof got.text, 2, IPC_NOWAIT);
    CHECK(n == 10 && got.type == 2 && strcmp(got.text, "beta beta") == 0, "message of type 2 lost");
    n = msgrcv(id_msg, &got, sizeof got.text, 0, IPC_NOWAIT);
    CHECK(n == 6 && got.type == 1 && strcmp(got.text, "alpha") == 0, "first message is not alpha");
    n = msgrcv(id_msg, &got, sizeof got.text, 0, IPC_NOWAIT);
    CHECK(n == 6 && got.type == 1 && strcmp(got.text, "gamma") == 0, "second message is not gamma");
    n = msgrcv(id_msg, &got, sizeof got.text, 0, IPC_NOWAIT);
    CHECK(n == 3000 && got.type == 5 && test_verify(got.text, 3000, 18) < 0, "binary message of type 5 lost");

    /* Sysctls of the namespace. */
    if (test_corrupt(8)) write_sysctl("msgmnb", "30001");
    check_sysctl("msgmnb", "30000");
    check_sysctl("msgmni", "77");
    check_sysctl("sem", "250 32000 33 128");

    /* They still work: the child goes, reads the token, answers. */
    uint64_t token = test_now_ns() | 1;
    memcpy(a + A_TOKEN, &token, 8);
    if (sem_change(SEM_CHILD_GO, 1) != 0) test_fail("semop release: %s", strerror(errno));
    if (sem_change(SEM_PARENT_GO, -1) != 0) test_fail("semop wait for the answer: %s", strerror(errno));
    uint64_t answer;
    memcpy(&answer, a + A_ANSWER, 8);
    CHECK(answer == token + 1, "the child's answer in segment A is not there");
    n = msgrcv(id_msg, &got, sizeof got.text, 77, IPC_NOWAIT);
    CHECK(n > 0 && strcmp(got.text, "from the child") == 0, "the child's message after restore is not there");
    test_expect_child_ok(child, "child");
    return test_finish();
}
#endif
