// place_fds_for_exec: fds end up at their numbers, open across exec, whatever the numbers.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include "ckpt/base/fd.h"

namespace {

ino_t inode(int fd) {
    struct stat st{};
    return ::fstat(fd, &st) == 0 ? st.st_ino : 0;
}

bool closes_on_exec(int fd) { return (::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }

// A close-on-exec memory file at exactly fd number `at`.
int memfd_at(int at) {
    auto f = ckpt::memory_file("test", "x");
    EXPECT_TRUE(f);
    int fd = ::fcntl(f->get(), F_DUPFD_CLOEXEC, at);
    EXPECT_EQ(fd, at);
    return fd;
}

TEST(PlaceFds, AnFdAlreadyAtItsNumberLosesCloseOnExec) {
    // ckpt-job's memory file was itself fd 3 when sbatch was to read it as fd 3.
    int fd = memfd_at(200);
    ino_t ino = inode(fd);
    std::pair<int, int> moves[] = {{fd, 200}};
    ASSERT_TRUE(ckpt::place_fds_for_exec(moves));
    EXPECT_FALSE(closes_on_exec(200));
    EXPECT_EQ(inode(200), ino);
    ::close(200);
}

TEST(PlaceFds, SourcesOnEachOthersTargetsAreSwappedNotLost) {
    int a = memfd_at(210), b = memfd_at(211);
    ino_t ia = inode(a), ib = inode(b);
    ASSERT_NE(ia, ib);
    std::pair<int, int> moves[] = {{a, 211}, {b, 210}};
    ASSERT_TRUE(ckpt::place_fds_for_exec(moves));
    EXPECT_EQ(inode(211), ia);
    EXPECT_EQ(inode(210), ib);
    EXPECT_FALSE(closes_on_exec(210));
    EXPECT_FALSE(closes_on_exec(211));
    ::close(210);
    ::close(211);
}

TEST(PlaceFds, ABadSourceFails) {
    std::pair<int, int> moves[] = {{-1, 220}};
    EXPECT_FALSE(ckpt::place_fds_for_exec(moves));
}

}  // namespace
