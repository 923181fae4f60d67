#include <gtest/gtest.h>

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
