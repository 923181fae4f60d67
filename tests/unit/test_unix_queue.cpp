// peek_unix_queue (the dump's peek of an AF_UNIX queue): with SO_PASSPIDFD on the receiver the
// kernel would install a pidfd in the engine for each message peeked; none may be left, nothing
// is taken out, and the receiver's options are as they were.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "ckpt/base/fd.h"
#include "fds/sock_opts.h"
#include "fds/unix_queue.h"

namespace {

int open_fds() {
    int n = 0;
    DIR* d = opendir("/proc/self/fd");
    if (!d) return -1;
    while (readdir(d)) ++n;
    closedir(d);
    return n;
}

int get_opt(int fd, int name) {
    int v = -1;
    socklen_t len = sizeof v;
    return getsockopt(fd, SOL_SOCKET, name, &v, &len) == 0 ? v : -1;
}

void peeks_without_leaking(int type) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv), 0);
    ckpt::UniqueFd a(sv[0]), b(sv[1]);
    int on = 1;
    if (setsockopt(b.get(), SOL_SOCKET, SO_PASSPIDFD, &on, sizeof on) != 0) GTEST_SKIP() << "no SO_PASSPIDFD here";
    for (const char* m : {"one", "two", "three"}) ASSERT_EQ(send(a.get(), m, strlen(m), 0), static_cast<ssize_t>(strlen(m)));
    if (type == SOCK_SEQPACKET) {
        // A message with an fd in flight: received by the peek, closed.
        ckpt::UniqueFd passed(open("/dev/null", O_RDONLY | O_CLOEXEC));
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
        iovec iov{const_cast<char*>("four"), 4};
        msghdr mh{};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = control;
        mh.msg_controllen = sizeof control;
        cmsghdr* c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        int fd = passed.get();
        std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
        ASSERT_EQ(sendmsg(a.get(), &mh, 0), 4);
    }
    int before = open_fds();
    for (int round = 0; round < 2; ++round) {
        auto q = ckpt::engine::peek_unix_queue(b.get());
        ASSERT_TRUE(q) << q.error().message();
        std::vector<std::string> want = {"one", "two", "three"};
        if (type == SOCK_STREAM) want = {"onetwothree"};
        if (type == SOCK_SEQPACKET) want.push_back("four");
        ASSERT_EQ(q->size(), want.size());
        for (size_t i = 0; i < want.size(); ++i) {
            EXPECT_EQ((*q)[i].first, want[i]);
            EXPECT_EQ((*q)[i].second, getpid());  // the sender known by its credentials
        }
        EXPECT_EQ(open_fds(), before) << "the peek left fds in the engine";
    }
    EXPECT_EQ(get_opt(b.get(), SO_PASSPIDFD), 1);
    EXPECT_EQ(get_opt(b.get(), SO_PASSCRED), 0);
    // Still queued, and read with a pidfd.
    char buf[64];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int)) * 2] = {};
    iovec iov{buf, sizeof buf};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    ssize_t n = recvmsg(b.get(), &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    ASSERT_GT(n, 0);
    EXPECT_EQ(std::string(buf, 3), "one");
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->cmsg_type, SCM_PIDFD);
    int pidfd;
    std::memcpy(&pidfd, CMSG_DATA(c), sizeof pidfd);
    close(pidfd);
}

TEST(UnixQueuePeek, PassPidfdStreamLeavesNoFd) { peeks_without_leaking(SOCK_STREAM); }
TEST(UnixQueuePeek, PassPidfdDgramLeavesNoFd) { peeks_without_leaking(SOCK_DGRAM); }
TEST(UnixQueuePeek, PassPidfdSeqpacketLeavesNoFd) { peeks_without_leaking(SOCK_SEQPACKET); }

}  // namespace
