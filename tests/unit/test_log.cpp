#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

#include "ckpt/base/fd.h"
#include "ckpt/base/log.h"

using namespace ckpt;

TEST(Log, DefaultIsQuiet) {
    auto l = log::get("test-default");
    EXPECT_FALSE(l->should_log(spdlog::level::info));
    EXPECT_TRUE(l->should_log(spdlog::level::warn));
}

TEST(Log, SpecSetsComponentLevels) {
    auto engine = log::get("test-engine");
    auto set = log::get("test-set");
    std::string msg;
    ASSERT_TRUE(log::apply_spec("info,test-engine=trace", &msg)) << msg;
    EXPECT_TRUE(engine->should_log(spdlog::level::trace));
    EXPECT_TRUE(set->should_log(spdlog::level::info));
    EXPECT_FALSE(set->should_log(spdlog::level::debug));
    // Loggers created later get their configured level too.
    EXPECT_TRUE(log::get("test-later")->should_log(spdlog::level::info));
    ASSERT_TRUE(log::apply_spec("warn", &msg));
    EXPECT_FALSE(engine->should_log(spdlog::level::info));
}

TEST(Log, BadSpecIsRejected) {
    std::string msg;
    EXPECT_FALSE(log::apply_spec("engine=loud", &msg));
    EXPECT_NE(msg.find("loud"), std::string::npos);
}

// -o LOG: every component's lines go to the file, and CRIU's -v0 (verbosity -2) silences them.
TEST(Log, ToFile) {
    char path[] = "/tmp/ckpt-test-log-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    close(fd);
    ASSERT_TRUE(log::log_to_file(path).ok());
    log::get("test-file")->warn("to the file {}", 42);
    log::configure(-2);
    log::get("test-file")->error("not written");
    auto read = read_file(path);
    unlink(path);
    ASSERT_TRUE(read.ok()) << read.error().message();
    const std::string& text = *read;
    EXPECT_NE(text.find("test-file"), std::string::npos) << text;
    EXPECT_NE(text.find("to the file 42"), std::string::npos) << text;
    EXPECT_EQ(text.find("not written"), std::string::npos) << text;
    EXPECT_FALSE(log::log_to_file("/nonexistent-dir/log").ok());
}
