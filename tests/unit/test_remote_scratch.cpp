// The scratch allocator of injected system calls: pieces are aligned, never overlap while
// live, come back when their scope ends, and asking for more than is left is an error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>

#include "remote_scratch.h"

using ckpt::engine::RemoteScratch;

namespace {

constexpr uint64_t kBase = 0x7f0000001000;

TEST(RemoteScratch, PiecesAreAlignedAndApart) {
    RemoteScratch arena(getpid(), kBase, 4096);
    auto s = arena.scope();
    uint64_t a = s.take(3, 1).value();
    uint64_t b = s.take(8, 8).value();
    uint64_t c = s.take(64, 64).value();
    EXPECT_EQ(a, kBase);
    EXPECT_EQ(b % 8, 0u);
    EXPECT_GE(b, a + 3);
    EXPECT_EQ(c % 64, 0u);
    EXPECT_GE(c, b + 8);
    EXPECT_EQ(arena.used(), c + 64 - kBase);
}

TEST(RemoteScratch, ScopeGivesBackWhatItTook) {
    RemoteScratch arena(getpid(), kBase, 4096);
    auto outer = arena.scope();
    uint64_t kept = outer.take(100).value();
    uint64_t first;
    {
        auto inner = arena.scope();
        first = inner.take(200).value();
        EXPECT_GE(first, kept + 100);
    }
    EXPECT_EQ(arena.used(), 100u);
    auto again = arena.scope();
    EXPECT_EQ(again.take(200).value(), first);  // the same room, reused
}

TEST(RemoteScratch, ExhaustionIsAnErrorNotAnOverlap) {
    RemoteScratch arena(1234, kBase, 4096);
    auto s = arena.scope();
    ASSERT_TRUE(s.take(4000).ok());
    auto r = s.take(200);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ENOSPC);
    EXPECT_NE(r.error().message().find("pid 1234: scratch memory exhausted: 200 bytes"), std::string::npos)
        << r.error().message();
    EXPECT_EQ(arena.used(), 4000u);  // a failed request takes nothing
    EXPECT_TRUE(s.take(96).ok());    // what is left still fits exactly
    EXPECT_FALSE(s.take(1, 1).ok());
}

TEST(RemoteScratch, AlignmentPaddingCountsAgainstTheArea) {
    RemoteScratch arena(getpid(), kBase, 128);
    auto s = arena.scope();
    ASSERT_TRUE(s.take(1, 1).ok());
    EXPECT_FALSE(s.take(128, 8).ok());  // fits unaligned, not once aligned
    EXPECT_TRUE(s.take(120, 8).ok());
}

TEST(RemoteScratch, HugeRequestDoesNotWrapAround) {
    RemoteScratch arena(getpid(), kBase, 4096);
    auto s = arena.scope();
    EXPECT_FALSE(s.take(~uint64_t{0}).ok());
    EXPECT_FALSE(s.take(16, uint64_t{1} << 63).ok());
    EXPECT_EQ(arena.used(), 0u);
}

TEST(RemoteScratch, BadAlignmentRefused) {
    RemoteScratch arena(getpid(), kBase, 4096);
    auto s = arena.scope();
    EXPECT_EQ(s.take(8, 0).error().code(), EINVAL);
    EXPECT_EQ(s.take(8, 24).error().code(), EINVAL);
}

TEST(RemoteScratch, OuterScopeCannotTakeWhileInnerIsOpen) {
    RemoteScratch arena(getpid(), kBase, 4096);
    auto outer = arena.scope();
    auto inner = arena.scope();
    ASSERT_TRUE(inner.take(16).ok());
    // Its piece would be given back when inner ends, while still in use.
    EXPECT_FALSE(outer.take(16).ok());
}

// put copies the data into the process: here the test's own memory.
TEST(RemoteScratch, PutCopiesIntoTheProcess) {
    alignas(16) static char area[256];
    std::memset(area, 0, sizeof area);
    RemoteScratch arena(getpid(), reinterpret_cast<uint64_t>(area), sizeof area);
    auto s = arena.scope();
    uint32_t groups[3] = {65534, 100, 7};
    uint64_t at = s.put(groups).value();
    EXPECT_EQ(at % alignof(uint32_t), 0u);
    EXPECT_EQ(std::memcmp(reinterpret_cast<void*>(at), groups, sizeof groups), 0);
    uint64_t word = s.put(uint64_t{0x1122334455667788}).value();
    EXPECT_EQ(word % 8, 0u);
    EXPECT_EQ(*reinterpret_cast<uint64_t*>(word), 0x1122334455667788u);
    char big[512] = {};
    EXPECT_FALSE(s.put(big).ok());
}

}  // namespace
