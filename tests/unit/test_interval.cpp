#include <gtest/gtest.h>

#include "ckpt/slurm/interval.h"

using ckpt::slurm::overhead_pause_ms;
using ckpt::slurm::parse_interval;

TEST(Interval, SlurmTimeGrammar) {
    EXPECT_EQ(parse_interval("30").value(), 30u * 60);
    EXPECT_EQ(parse_interval("10:30").value(), 10u * 60 + 30);
    EXPECT_EQ(parse_interval("1:00:00").value(), 3600u);
    EXPECT_EQ(parse_interval("2-12").value(), 2u * 86400 + 12 * 3600);
    EXPECT_EQ(parse_interval("2-12:30").value(), 2u * 86400 + 12 * 3600 + 30 * 60);
    EXPECT_EQ(parse_interval("1-00:00:15").value(), 86400u + 15);
    EXPECT_EQ(parse_interval("0").value(), 0u);
}

TEST(Interval, UnitSuffixes) {
    EXPECT_EQ(parse_interval("30s").value(), 30u);
    EXPECT_EQ(parse_interval("10m").value(), 600u);
    EXPECT_EQ(parse_interval("2h").value(), 7200u);
    EXPECT_EQ(parse_interval("1d").value(), 86400u);
}

TEST(Interval, BadValuesNameTheForms) {
    for (const char* bad : {"", "abc", "-5", "5x", "1:2:3:4", "10:75", "1-25:61", "s", "3.5h", "1--2", "99999d"}) {
        auto r = parse_interval(bad);
        ASSERT_FALSE(r.ok()) << "'" << bad << "' was accepted";
        EXPECT_NE(r.error().message().find("checkpoint interval"), std::string::npos) << r.error().message();
    }
    EXPECT_NE(parse_interval("abc").error().message().find("30s"), std::string::npos);
}

TEST(Interval, OverheadPauseKeepsTheShare) {
    // 25 %: a set of 1 s is followed by 3 s of work; 10 %: by 9 s.
    EXPECT_EQ(overhead_pause_ms(1000, 25), 3000u);
    EXPECT_EQ(overhead_pause_ms(1000, 10), 9000u);
    EXPECT_EQ(overhead_pause_ms(1000, 50), 1000u);
    EXPECT_EQ(overhead_pause_ms(1, 1), 99u);
    // Rounded up: never a larger share than asked.
    EXPECT_EQ(overhead_pause_ms(1, 30), 3u);
    for (uint64_t cost : {7u, 333u, 12345u})
        for (uint32_t p : {1u, 7u, 25u, 99u})
            EXPECT_LE(cost * 100, (cost + overhead_pause_ms(cost, p)) * p) << cost << " ms at " << p << " %";
    // No limit.
    EXPECT_EQ(overhead_pause_ms(5000, 100), 0u);
    EXPECT_EQ(overhead_pause_ms(0, 25), 0u);
}
