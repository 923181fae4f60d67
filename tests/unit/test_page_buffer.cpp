// PageBuffer: large buffers start at a huge page boundary, advised huge, and are unmapped
// when they go.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "ckpt/base/fd.h"
#include "ckpt/base/page_buffer.h"

namespace {

constexpr size_t kMiB = 1u << 20;

// The VmFlags of the mapping of this process that starts at addr ("" when none does).
std::string vm_flags_at(const void* addr) {
    auto text = ckpt::read_file("/proc/self/smaps");
    if (!text) return "";
    char start[32];
    snprintf(start, sizeof start, "%lx-", reinterpret_cast<unsigned long>(addr));
    size_t at = 0;
    while ((at = text->find(start, at)) != std::string::npos) {
        if (at == 0 || (*text)[at - 1] == '\n') {
            size_t flags = text->find("VmFlags:", at);
            if (flags == std::string::npos) return "";
            return text->substr(flags, text->find('\n', flags) - flags) + " ";
        }
        ++at;
    }
    return "";
}

bool mapped(const void* addr, size_t len) {
    unsigned char vec[4];
    return mincore(const_cast<void*>(addr), std::min(len, sizeof vec * 4096), vec) == 0 || errno != ENOMEM;
}

TEST(PageBuffer, ALargeBufferStartsAtAHugePageAndIsAdvisedHuge) {
    ckpt::PageBuffer b(4 * kMiB);
    ASSERT_TRUE(b);
    EXPECT_EQ(b.size(), 4 * kMiB);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % (2 * kMiB), 0u);
    std::memset(b.data(), 0x5a, b.size());
    EXPECT_EQ(b.data()[b.size() - 1], 0x5a);
    // (A kernel built without transparent huge pages refuses the advice: ordinary memory.)
    if (access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0) {
        EXPECT_NE(vm_flags_at(b.data()).find(" hg "), std::string::npos) << vm_flags_at(b.data());
    }
}

TEST(PageBuffer, ASmallBufferIsWholePagesNotAdvised) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    ckpt::PageBuffer b(page + 1);
    ASSERT_TRUE(b);
    EXPECT_EQ(b.size(), 2 * page);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % page, 0u);
    b.data()[b.size() - 1] = 1;
    EXPECT_EQ(vm_flags_at(b.data()).find(" hg "), std::string::npos);
}

TEST(PageBuffer, MovedOwnsTheMemoryAndUnmapsItOnce) {
    ckpt::PageBuffer a(3 * kMiB);
    ASSERT_TRUE(a);
    char* data = a.data();
    ckpt::PageBuffer b(std::move(a));
    EXPECT_FALSE(a);
    EXPECT_EQ(b.data(), data);
    ckpt::PageBuffer c;
    c = std::move(b);
    EXPECT_EQ(c.data(), data);
    EXPECT_TRUE(mapped(data, c.size()));
    c = ckpt::PageBuffer();
    EXPECT_FALSE(mapped(data, 3 * kMiB));
}

TEST(ReadFile, SmallReadsGiveTheWholeFile) {
    std::string text(10000, 'x');
    for (size_t i = 0; i < text.size(); ++i) text[i] = static_cast<char>('a' + i % 26);
    auto fd = ckpt::memory_file("read-file", text);
    ASSERT_TRUE(fd);
    auto got = ckpt::read_file("/proc/self/fd/" + std::to_string(fd->get()), 7);
    ASSERT_TRUE(got) << got.error().message();
    EXPECT_EQ(*got, text);
}

}  // namespace
