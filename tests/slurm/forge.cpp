// forge: what a user who attacks ckpt through their own checkpoint folder writes there
// (the privilege test, test_ckpt_privilege.sh). Each file comes out well-formed and sealed:
// a checksum proves nothing about who wrote a file.
//
//   forge report AGENTS_DIR STEP SEQ MEMBER DIR FILE BYTES
//       a node report for set SEQ of step STEP (a number, or "batch") whose member MEMBER's
//       image folder is DIR and whose one file is FILE of BYTES bytes
//   forge index-owner INDEX UID USER
//       rewrites the owner an index records
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "ckpt/base/strings.h"
#include "ckpt/set/index_h5.h"
#include "ckpt/slurm/coordination.h"

namespace {

ckpt::Result<void> report(const std::vector<std::string>& a) {
    if (a.size() != 7) return ckpt::error("report: 7 arguments");
    uint32_t step = a[1] == "batch" ? ckpt::slurm::kBatchStep
                                    : static_cast<uint32_t>(CKPT_TRY(ckpt::parse_uint(a[1])));
    ckpt::slurm::NodeReport r;
    r.seq = CKPT_TRY(ckpt::parse_uint(a[2]));
    r.node = "forged";
    r.members.push_back({static_cast<int32_t>(CKPT_TRY(ckpt::parse_int(a[3]))), a[4],
                         {{a[5], CKPT_TRY(ckpt::parse_uint(a[6])), 0x1234}}});
    auto dir = CKPT_TRY(ckpt::slurm::open_folder(a[0], std::nullopt));
    return ckpt::slurm::write_file_at(dir.get(), ckpt::slurm::report_name(step, r.seq, 0),
                                      ckpt::slurm::encode(r));
}

ckpt::Result<void> index_owner(const std::vector<std::string>& a) {
    if (a.size() != 3) return ckpt::error("index-owner: 3 arguments");
    ckpt::set::Index idx = CKPT_TRY(ckpt::set::read_index(a[0]));
    idx.job.uid = static_cast<uint32_t>(CKPT_TRY(ckpt::parse_uint(a[1])));
    idx.job.user = a[2];
    std::string tmp = a[0] + ".forged";
    ::unlink(tmp.c_str());
    CKPT_TRY(ckpt::set::write_index_file(tmp, idx));
    if (::rename(tmp.c_str(), a[0].c_str()) != 0) return ckpt::sys_error("rename {}", tmp);
    return ckpt::ok();
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) {
        std::fprintf(stderr, "usage: forge report|index-owner ...\n");
        return 2;
    }
    std::string what = args.front();
    args.erase(args.begin());
    auto r = what == "report"        ? report(args)
             : what == "index-owner" ? index_owner(args)
                                     : ckpt::Result<void>(ckpt::error("unknown '{}'", what));
    if (!r) {
        std::fprintf(stderr, "forge %s: %s\n", what.c_str(), r.error().message().c_str());
        return 1;
    }
    return 0;
}
