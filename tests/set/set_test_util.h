// Helpers for the set tests: a throwaway checkpoint root and members made of real files.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "ckpt/set/store.h"

namespace ckpt::set::testing {

class TempRoot {
public:
    TempRoot() {
        char tmpl[] = "/tmp/ckpt-set-test-XXXXXX";
        if (!::mkdtemp(tmpl)) std::abort();
        path_ = tmpl;
    }
    ~TempRoot() { (void)std::system(("rm -rf '" + path_ + "'").c_str()); }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

inline JobInfo sample_job(uint64_t jobid) {
    JobInfo j;
    j.jobid = jobid;
    j.user = "root";
    j.uid = ::geteuid();
    j.gid = ::getegid();
    j.name = "lattice-qcd";
    j.cluster = "testcluster";
    j.submit_options = "--checkpoint-interval=30m --requeue -N2";
    return j;
}

// Writes a file of n pseudo-random bytes and fsyncs it.
inline void write_random_file(const std::string& path, size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::string data(n, '\0');
    for (char& c : data) c = static_cast<char>(rng());
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd, 0) << path;
    ASSERT_EQ(::write(fd, data.data(), n), static_cast<ssize_t>(n));
    ASSERT_EQ(::fsync(fd), 0);
    ::close(fd);
}

// Fills a member's image folder with a few engine-like files (one in a subfolder).
inline void write_member_images(const std::string& dir, uint32_t seed, size_t scale = 4096) {
    write_random_file(dir + "/inventory.img", 100 + seed % 50, seed);
    write_random_file(dir + "/core-1.img", scale, seed + 1);
    ::mkdir((dir + "/pages").c_str(), 0700);
    write_random_file(dir + "/pages/pages-1.img", 3 * scale, seed + 2);
}

// Begins a set (incremental on set `parent` if not 0), writes and reports `members` members,
// commits it; returns its seq.
inline uint64_t write_committed_set(JobStore& st, uint32_t members, uint32_t seed = 1, uint64_t parent = 0) {
    auto seq = st.begin_set({Trigger::Interval, 0, 2, members, {}, parent});
    EXPECT_TRUE(seq.ok()) << seq.error().message();
    if (!seq) return 0;
    for (uint32_t i = 0; i < members; ++i) {
        auto dir = st.make_member_dir(*seq, static_cast<int32_t>(i));
        EXPECT_TRUE(dir.ok()) << dir.error().message();
        write_member_images(*dir, seed * 100 + i);
        auto r = st.add_member(*seq, static_cast<int32_t>(i), i % 2 ? "node2" : "node1", *dir);
        EXPECT_TRUE(r.ok()) << r.error().message();
    }
    auto c = st.commit_set(*seq);
    EXPECT_TRUE(c.ok()) << c.error().message();
    return *seq;
}

inline void flip_byte(const std::string& path, off_t offset) {
    int fd = ::open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0) << path;
    unsigned char c;
    ASSERT_EQ(::pread(fd, &c, 1, offset), 1);
    c ^= 0x20;
    ASSERT_EQ(::pwrite(fd, &c, 1, offset), 1);
    ::close(fd);
}

inline off_t file_size(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

}  // namespace ckpt::set::testing
