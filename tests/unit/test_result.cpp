#include <gtest/gtest.h>

#include <cerrno>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"
#include "ckpt/base/strings.h"

using namespace ckpt;

namespace {

Result<int> leaf(bool fail) {
    if (fail) {
        errno = ENOENT;
        return sys_error("openat({})", "/nope");
    }
    return 7;
}

Result<int> middle(bool fail) {
    int v = CKPT_TRY_CTX(leaf(fail), "fd {}", 3);
    return v * 2;
}

Result<void> top(bool fail, int* out) {
    *out = CKPT_TRY_CTX(middle(fail), "restore pid {}", 42);
    return ok();
}

}  // namespace

TEST(Result, ValuePassesThrough) {
    int out = 0;
    auto r = top(false, &out);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(out, 14);
}

TEST(Result, ErrorCarriesErrnoAndContext) {
    int out = 0;
    auto r = top(true, &out);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ENOENT);
    EXPECT_EQ(r.error().message(), "restore pid 42: fd 3: openat(/nope): No such file or directory");
    EXPECT_EQ(out, 0);
}

TEST(Result, ContextOnSuccessIsNoop) {
    auto r = leaf(false);
    auto r2 = std::move(r).context("ignored {}", 1);
    ASSERT_TRUE(r2.ok());
    EXPECT_EQ(r2.value(), 7);
}

TEST(Fd, ReadFileMissingNamesPath) {
    auto r = read_file("/nonexistent/ckpt-test");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ENOENT);
    EXPECT_NE(r.error().message().find("/nonexistent/ckpt-test"), std::string::npos);
}

TEST(Strings, ParseInt) {
    EXPECT_EQ(parse_int("-12").value(), -12);
    EXPECT_EQ(parse_uint("7f", 16).value(), 0x7fu);
    EXPECT_FALSE(parse_int("12x").ok());
    EXPECT_FALSE(parse_int("").ok());
    auto parts = split("a:b::c", ':');
    ASSERT_EQ(parts.size(), 4u);
    EXPECT_EQ(parts[2], "");
    EXPECT_EQ(trim("  x y \n"), "x y");
}
