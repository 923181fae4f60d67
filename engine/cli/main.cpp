// ckpt-engine: checkpoint and restore Linux process trees (CRIU's verbs and flags).
// Exit codes: 0 success, 1 failure (one line on stderr says what failed), 2 usage.
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "ckpt/base/log.h"
#include "ckpt/engine/kernel_features.h"

namespace {

constexpr int kExitOk = 0, kExitFail = 1, kExitUsage = 2;

const char kUsage[] =
    "usage: ckpt-engine [-v...] <command> [options]\n"
    "\n"
    "Checkpoint and restore Linux process trees.\n"
    "\n"
    "commands:\n"
    "  check                 probe the kernel features the engine needs; exit 1 if a required one is missing\n"
    "  help                  show this text\n"
    "\n"
    "options for every command:\n"
    "  -v, -vv, -vvv         log info, debug, trace to stderr (or set CKPT_LOG=level[,component=level])\n"
    "  -h, --help            show this text\n";

int usage_error(const std::string& msg) {
    std::fprintf(stderr, "ckpt-engine: %s\n(see ckpt-engine --help)\n", msg.c_str());
    return kExitUsage;
}

int cmd_check(const std::vector<std::string_view>& args) {
    if (!args.empty()) return usage_error("check takes no arguments");
    auto probes = ckpt::engine::probe_kernel_features();
    bool missing_required = false;
    for (const auto& p : probes) {
        const char* state = p.available ? "ok" : (p.required ? "MISSING" : "missing");
        std::printf("%-20s %-8s %-9s %s (%s)\n", p.name.c_str(), state, p.required ? "required" : "optional",
                    p.purpose.c_str(), p.detail.c_str());
        if (!p.available && p.required) missing_required = true;
    }
    if (missing_required) {
        std::fprintf(stderr, "ckpt-engine: check: a required kernel feature is missing; dump and restore cannot work here\n");
        return kExitFail;
    }
    return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
    int verbosity = 0;
    std::vector<std::string_view> rest;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "-h" || a == "--help") {
            std::fputs(kUsage, stdout);
            return kExitOk;
        }
        if (a.size() >= 2 && a[0] == '-' && a.find_first_not_of('v', 1) == std::string_view::npos) {
            verbosity += static_cast<int>(a.size() - 1);
            continue;
        }
        if (a == "--verbose") {
            ++verbosity;
            continue;
        }
        rest.push_back(a);
    }
    ckpt::log::configure(verbosity);
    if (rest.empty()) return usage_error("no command given");
    std::string_view cmd = rest.front();
    std::vector<std::string_view> args(rest.begin() + 1, rest.end());
    if (cmd == "help") {
        std::fputs(kUsage, stdout);
        return kExitOk;
    }
    if (cmd == "check") return cmd_check(args);
    return usage_error("unknown command '" + std::string(cmd) + "'");
}
