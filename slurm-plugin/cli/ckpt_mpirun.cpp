// ckpt-mpirun: `mpirun` for job scripts of checkpointed MPI jobs (docs/mpi.md, "mpirun in a
// job script"). Inside a Slurm allocation it runs the same ranks with `srun --mpi=pmix`, so
// that Slurm launches them and ckpt can checkpoint them; outside one it is mpirun itself.
// Exit status: srun's (or mpirun's); 2 for a command line it cannot translate.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ckpt/slurm/mpirun_args.h"

namespace {

const char kUsage[] =
    "usage: ckpt-mpirun [mpirun options] PROGRAM [ARGS...]\n"
    "\n"
    "Inside a Slurm allocation: runs PROGRAM's ranks with srun --mpi=pmix, which ckpt\n"
    "checkpoints (Open MPI's mpirun would start daemons of its own to own them). Translated:\n"
    "  -n/-np/-c N           --ntasks=N\n"
    "  -N/--npernode N       --ntasks-per-node=N (also --map-by ppr:N:node)\n"
    "  --map-by node|slot|core   --distribution=cyclic|block|block\n"
    "  --bind-to none|core|socket|hwthread   --cpu-bind=none|cores|sockets|threads\n"
    "  -x NAME[=VALUE]       the variable for the ranks (--export=ALL)\n"
    "  --mca KEY VALUE       OMPI_MCA_KEY=VALUE for the ranks (--export=ALL)\n"
    "  --wdir DIR            --chdir=DIR\n"
    "  --oversubscribe       --overcommit\n"
    "  --tag-output          --label\n"
    "  -q/--quiet            --quiet\n"
    "  --allow-run-as-root   (nothing to lift)\n"
    "and always --mpi=pmix --kill-on-bad-exit=1. Any other option is refused by name.\n"
    "Outside an allocation (no SLURM_JOB_ID): runs mpirun with the arguments unchanged.\n";

int exec_or_fail(const char* program, const std::vector<std::string>& args) {
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(program));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execvp(program, argv.data());
    std::fprintf(stderr, "ckpt-mpirun: cannot run %s: %s\n", program, std::strerror(errno));
    return errno == ENOENT ? 127 : 126;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() == 1 && (args[0] == "-h" || args[0] == "--help")) {
        std::fputs(kUsage, stdout);
        return 0;
    }
    const char* job = std::getenv("SLURM_JOB_ID");
    if (!job || !*job) return exec_or_fail("mpirun", args);
    auto srun = ckpt::slurm::srun_for_mpirun(args);
    if (!srun) {
        std::fprintf(stderr, "ckpt-mpirun: %s\n", srun.error().message().c_str());
        return 2;
    }
    for (const auto& [name, value] : srun->env)
        if (::setenv(name.c_str(), value.c_str(), 1) != 0) {
            std::fprintf(stderr, "ckpt-mpirun: setenv %s: %s\n", name.c_str(), std::strerror(errno));
            return 1;
        }
    return exec_or_fail("srun", srun->args);
}
