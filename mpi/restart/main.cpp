// ckpt-mpi-restore: one task of a new launch (mpirun, or srun --mpi=pmix) that becomes the
// restorer of its rank: it restores the rank's image as its child, hands it the new launch's
// environment on the channel it was parked on, then stays as the launch's task (signals to
// the rank, the rank's exit status as its own). docs/mpi.md, "Restart".
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ckpt/base/log.h"
#include "ckpt/base/strings.h"
#include "ckpt/engine/engine.h"
#include "ckpt/mpi/control.h"

namespace {

namespace ctl = ckpt::mpi::control;

int usage(const char* why) {
    std::fprintf(stderr,
                 "ckpt-mpi-restore: %s\n"
                 "usage: ckpt-mpi-restore --images SET_DIR [--new-pidns] [-v]\n"
                 "  run as every task of a new launch (mpirun -n N, srun -n N): restores rank R of the\n"
                 "  set from SET_DIR/rank-R (R from OMPI_COMM_WORLD_RANK, PMIX_RANK or SLURM_PROCID)\n",
                 why);
    return 2;
}

int my_rank() {
    for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"})
        if (const char* v = std::getenv(var))
            if (auto n = ckpt::parse_int(v); n && *n >= 0) return static_cast<int>(*n);
    return -1;
}

}  // namespace

int main(int argc, char** argv) {
    std::string images;
    bool new_pidns = false;
    int verbosity = 0;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--images" && i + 1 < argc) images = argv[++i];
        else if (a == "--new-pidns") new_pidns = true;
        else if (a == "-v") ++verbosity;
        else return usage(("unknown option " + a).c_str());
    }
    if (images.empty()) return usage("--images is required");
    ckpt::log::configure(verbosity);
    int rank = my_rank();
    if (rank < 0) {
        std::fprintf(stderr, "ckpt-mpi-restore: no rank in the environment (not started by mpirun or srun?)\n");
        return 1;
    }
    // The images are restored as they describe themselves (no --restore-as here): only from
    // folders the caller owns and nobody else may write, never through a link.
    for (const std::string& path : {images, images + "/rank-" + std::to_string(rank)}) {
        struct stat st {};
        if (lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022)) {
            std::fprintf(stderr, "ckpt-mpi-restore: rank %d: %s: not a folder of this user's that only it may write: refused\n",
                         rank, path.c_str());
            return 1;
        }
    }
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0) {
        std::perror("ckpt-mpi-restore: socketpair");
        return 1;
    }
    ckpt::engine::RestoreOptions o;
    o.image_dir = images + "/rank-" + std::to_string(rank);
    o.new_pidns = new_pidns;
    o.inherit_fds[ctl::kControlFdKey] = sp[1];
    auto tree = ckpt::engine::restore(o);
    if (!tree) {
        std::fprintf(stderr, "ckpt-mpi-restore: rank %d: %s\n", rank, tree.error().message().c_str());
        return 1;
    }
    close(sp[1]);
    // The new launch's environment: the rank takes its launcher's variables from it.
    ctl::Header h{static_cast<uint32_t>(ctl::Msg::Restarted), 0};
    std::string body(reinterpret_cast<const char*>(&h), sizeof h);
    for (char** e = environ; *e; ++e) {
        body += *e;
        body += '\0';
    }
    if (body.size() > ctl::kMaxRecord || send(sp[0], body.data(), body.size(), MSG_NOSIGNAL) < 0) {
        std::fprintf(stderr, "ckpt-mpi-restore: rank %d: cannot hand the restored rank its environment: %s\n", rank,
                     std::strerror(errno));
        kill(tree->root, SIGKILL);
    }
    return ckpt::engine::wait_restored(*tree);
}
