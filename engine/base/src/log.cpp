#include "ckpt/base/log.h"

#include <fcntl.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

#include "ckpt/base/fd.h"

namespace ckpt::log {
namespace {

// A sink on an fd the engine opened itself, so that it is O_CLOEXEC (spdlog's file sinks
// open theirs without it) and O_APPEND (processes forked during a restore log through it too).
class FdSink : public spdlog::sinks::base_sink<std::mutex> {
public:
    explicit FdSink(UniqueFd fd) : fd_(std::move(fd)) {}

protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        spdlog::memory_buf_t line;
        formatter_->format(msg, line);
        (void)write_all(fd_.get(), line.data(), line.size());  // a lost log line must not fail the work
    }
    void flush_() override {}

private:
    UniqueFd fd_;
};

struct Registry {
    std::mutex mu;
    spdlog::level::level_enum default_level = spdlog::level::warn;
    std::map<std::string, spdlog::level::level_enum, std::less<>> overrides;
    std::map<std::string, std::shared_ptr<spdlog::logger>, std::less<>> loggers;
    spdlog::sink_ptr sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
};

Registry& registry() {
    static Registry r;
    return r;
}

spdlog::level::level_enum level_for(Registry& r, std::string_view component) {
    auto it = r.overrides.find(component);
    return it == r.overrides.end() ? r.default_level : it->second;
}

bool parse_level(std::string_view s, spdlog::level::level_enum* out) {
    static const std::pair<std::string_view, spdlog::level::level_enum> names[] = {
        {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},
        {"info", spdlog::level::info},   {"warn", spdlog::level::warn},
        {"warning", spdlog::level::warn}, {"error", spdlog::level::err},
        {"critical", spdlog::level::critical}, {"off", spdlog::level::off}};
    for (auto& [name, lvl] : names) {
        if (s == name) {
            *out = lvl;
            return true;
        }
    }
    return false;
}

}  // namespace

std::shared_ptr<spdlog::logger> get(std::string_view component) {
    Registry& r = registry();
    std::lock_guard lock(r.mu);
    auto it = r.loggers.find(component);
    if (it != r.loggers.end()) return it->second;
    auto logger = std::make_shared<spdlog::logger>(std::string(component), r.sink);
    logger->set_pattern("ckpt %n[%P] %l: %v");
    logger->set_level(level_for(r, component));
    logger->flush_on(spdlog::level::trace);
    r.loggers.emplace(std::string(component), logger);
    return logger;
}

bool apply_spec(std::string_view spec, std::string* message) {
    Registry& r = registry();
    std::lock_guard lock(r.mu);
    while (!spec.empty()) {
        size_t comma = spec.find(',');
        std::string_view item = spec.substr(0, comma);
        spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
        if (item.empty()) continue;
        size_t eq = item.find('=');
        spdlog::level::level_enum lvl;
        std::string_view lvl_name = eq == std::string_view::npos ? item : item.substr(eq + 1);
        if (!parse_level(lvl_name, &lvl)) {
            if (message)
                *message = "CKPT_LOG: unknown level '" + std::string(lvl_name) +
                           "' (trace, debug, info, warn, error, critical, off)";
            return false;
        }
        if (eq == std::string_view::npos) {
            r.default_level = lvl;
            r.overrides.clear();
        } else {
            r.overrides[std::string(item.substr(0, eq))] = lvl;
        }
    }
    for (auto& [name, logger] : r.loggers) logger->set_level(level_for(r, name));
    return true;
}

Result<void> log_to_file(const std::string& path) {
    UniqueFd fd = CKPT_TRY_CTX(open_file(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600), "log file");
    Registry& r = registry();
    std::lock_guard lock(r.mu);
    r.sink = std::make_shared<FdSink>(std::move(fd));
    for (auto& [name, logger] : r.loggers) logger->sinks() = {r.sink};
    return ok();
}

void configure(int verbosity) {
    const char* v = verbosity >= 3    ? "trace"
                    : verbosity == 2  ? "debug"
                    : verbosity == 1  ? "info"
                    : verbosity == -1 ? "error"
                    : verbosity <= -2 ? "off"
                                      : nullptr;
    if (v) apply_spec(v, nullptr);
    if (const char* env = std::getenv("CKPT_LOG")) {
        std::string msg;
        if (!apply_spec(env, &msg)) get("log")->error("{}", msg);
    }
}

}  // namespace ckpt::log
