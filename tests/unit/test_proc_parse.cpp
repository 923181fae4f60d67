// The /proc parsers take the file's text: a well-formed file gives its fields, and a
// malformed line is an error that names the line (the engine must not die on it while the
// tree is frozen).
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <string>

#include "proc.h"

namespace ckpt::engine {
namespace {

std::string stat_line(const std::string& comm, const std::string& ppid) {
    // Fields 1..52 of proc(5); field n (n >= 4) holds n unless set here.
    std::string s = "42 (" + comm + ") S " + ppid;
    for (int n = 5; n <= 52; ++n) s += " " + std::to_string(n);
    return s + "\n";
}

TEST(ProcParse, StatCommWithParenthesesAndSpaces) {
    auto s = parse_stat(stat_line("a) (b c", "7"));
    ASSERT_TRUE(s.ok()) << s.error().message();
    EXPECT_EQ(s->pid, 42);
    EXPECT_EQ(s->comm, "a) (b c");
    EXPECT_EQ(s->state, 'S');
    EXPECT_EQ(s->ppid, 7);
    EXPECT_EQ(s->pgid, 5);
    EXPECT_EQ(s->exit_code, 52);
}

TEST(ProcParse, StatMalformedFieldIsAnError) {
    auto s = parse_stat(stat_line("sleep", "x7"));
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message().find("stat field 4"), std::string::npos) << s.error().message();
    EXPECT_NE(s.error().message().find("'x7'"), std::string::npos) << s.error().message();
    EXPECT_FALSE(parse_stat("42 sleep S 1 2 3\n").ok());
    EXPECT_FALSE(parse_stat("42 (sleep) S 1 2 3\n").ok());
}

TEST(ProcParse, Status) {
    auto s = parse_status("Name:\tsleep\nUmask:\t0027\nTgid:\t42\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\n"
                          "Groups:\t10 20 \nNSpid:\t42\t3\nSigBlk:\t0000000000010000\nNoNewPrivs:\t1\nTracerPid:\t77\n");
    ASSERT_TRUE(s.ok()) << s.error().message();
    EXPECT_EQ(s->umask, 027u);
    EXPECT_EQ(s->tgid, 42);
    EXPECT_EQ(s->uid[3], 4u);
    EXPECT_EQ(s->gid[0], 5u);
    ASSERT_EQ(s->groups.size(), 2u);
    EXPECT_EQ(s->groups[1], 20u);
    ASSERT_EQ(s->nspid.size(), 2u);
    EXPECT_EQ(s->nspid[1], 3);
    EXPECT_EQ(s->sig_blk, 0x10000u);
    EXPECT_TRUE(s->no_new_privs);
    EXPECT_EQ(s->tracer, 77);
}

TEST(ProcParse, StatusMalformedLinesAreErrors) {
    for (const char* bad : {"Uid:\t0\t0\tzero\t0\n", "Uid:\t0\t0\n", "Groups:\t10 x\n", "SigBlk:\tnothex\n",
                            "Umask:\t0089\n", "Tgid:\t\n", "TracerPid:\tx\n", "NSpid:\t1\t-\n", "CapEff:\t\n"}) {
        auto s = parse_status(bad);
        ASSERT_FALSE(s.ok()) << bad;
        std::string line(bad, std::string(bad).size() - 1);
        EXPECT_NE(s.error().message().find(line), std::string::npos) << s.error().message();
    }
}

TEST(ProcParse, Limits) {
    auto l = parse_limits("Limit                     Soft Limit           Hard Limit           Units\n"
                          "Max cpu time              unlimited            unlimited            seconds\n"
                          "Max open files            1024                 4096                 files\n");
    ASSERT_TRUE(l.ok()) << l.error().message();
    ASSERT_EQ(l->size(), 2u);
    EXPECT_EQ((*l)[0].resource, static_cast<uint32_t>(RLIMIT_CPU));
    EXPECT_EQ((*l)[0].cur, RLIM_INFINITY);
    EXPECT_EQ((*l)[1].resource, static_cast<uint32_t>(RLIMIT_NOFILE));
    EXPECT_EQ((*l)[1].max, 4096u);
    auto bad = parse_limits("Max open files            1024                 lots                 files\n");
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message().find("Max open files"), std::string::npos) << bad.error().message();
}

TEST(ProcParse, ChildrenFdinfoMaps) {
    auto c = parse_children("12 13 \n");
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c->size(), 2u);
    EXPECT_FALSE(parse_children("12 1x3\n").ok());

    auto f = parse_fdinfo("pos:\t10\nflags:\t0100002\nmnt_id:\t3\n");
    ASSERT_TRUE(f.ok()) << f.error().message();
    EXPECT_EQ(f->pos, 10u);
    EXPECT_EQ(f->flags, 0100002u);
    auto bad = parse_fdinfo("pos:\t10\nflags:\t0100009\n");
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message().find("flags:"), std::string::npos) << bad.error().message();

    auto m = parse_maps("00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/x y\n");
    ASSERT_TRUE(m.ok()) << m.error().message();
    EXPECT_EQ((*m)[0].path, "/usr/bin/x y");
    EXPECT_TRUE((*m)[0].exec);
    EXPECT_FALSE(parse_maps("00400000 r-xp\n").ok());
}

}  // namespace
}  // namespace ckpt::engine
