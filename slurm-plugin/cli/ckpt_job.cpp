// ckpt-job: a user's view of a job's checkpoints.
// Exit codes: 0 success, 1 failure (one line on stderr says what failed), 2 usage.
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "ckpt/base/log.h"

namespace {

constexpr int kExitOk = 0, kExitUsage = 2;

const char kUsage[] =
    "usage: ckpt-job [-v...] <command> [JOBID] [options]\n"
    "\n"
    "Inspect and manage the checkpoints of Slurm jobs. JOBID defaults to $SLURM_JOB_ID.\n"
    "\n"
    "commands:\n"
    "  help                  show this text\n"
    "\n"
    "options for every command:\n"
    "  -v, -vv, -vvv         log info, debug, trace to stderr (or set CKPT_LOG=level[,component=level])\n"
    "  -h, --help            show this text\n";

int usage_error(const std::string& msg) {
    std::fprintf(stderr, "ckpt-job: %s\n(see ckpt-job --help)\n", msg.c_str());
    return kExitUsage;
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
        rest.push_back(a);
    }
    ckpt::log::configure(verbosity);
    if (rest.empty()) return usage_error("no command given");
    if (rest.front() == "help") {
        std::fputs(kUsage, stdout);
        return kExitOk;
    }
    return usage_error("unknown command '" + std::string(rest.front()) + "'");
}
