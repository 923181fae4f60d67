// MPI ranks of a checkpointed srun step (docs/mpi.md, "Under Slurm"): with the site's
// `mpi=DIR` (the folder holding ckpt's libmpi.so.40, libckpt_mpi), a task launched by the
// pmix plugin whose program is linked with libmpi (any such task, with
// --checkpoint-mpi=always; none with never) gets that folder first on its library path, so the program's MPI calls land in ckpt's upper half, and CKPT_MPI_CONTROL, where the
// step's agent on this node relays its control channel to the step's coordinator. Other
// tasks, and jobs that do not checkpoint, are left exactly as Slurm made them.
#include <elf.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/mpi/control.h"
#include "plugin_state.h"

extern "C" {
#include <slurm/slurm.h>
}

namespace ckpt::slurm::spank {

namespace {

// Whether the ELF program at `path` names Open MPI's libmpi.so, or one of its bindings'
// libraries (libmpi_mpifh, libmpi_usempif08, libmpi_cxx ...: a Fortran program may need only
// those, and must meet ckpt's stand-in that refuses it by name), among the libraries it needs. A
// program that loads MPI at run time (an interpreter) is not recognised: unless the job says
// --checkpoint-mpi=always it runs unchanged, and a dump of it refuses its sockets rather than
// saving something that cannot come back.
bool needs_libmpi(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st;
    if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < static_cast<off_t>(sizeof(Elf64_Ehdr)))
        return false;
    auto read_at = [&](void* buf, size_t len, uint64_t off) {
        return off + len <= static_cast<uint64_t>(st.st_size) &&
               ::pread(fd.get(), buf, len, static_cast<off_t>(off)) == static_cast<ssize_t>(len);
    };
    Elf64_Ehdr eh;
    if (!read_at(&eh, sizeof eh, 0) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
        eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shnum > 4096)
        return false;
    std::vector<Elf64_Shdr> sections(eh.e_shnum);
    if (!read_at(sections.data(), sections.size() * sizeof(Elf64_Shdr), eh.e_shoff)) return false;
    for (const Elf64_Shdr& s : sections) {
        if (s.sh_type != SHT_DYNAMIC || s.sh_link >= sections.size() || s.sh_size > (1u << 20)) continue;
        const Elf64_Shdr& strtab = sections[s.sh_link];
        if (strtab.sh_size > (16u << 20)) continue;
        std::vector<Elf64_Dyn> dyn(s.sh_size / sizeof(Elf64_Dyn));
        std::string names(strtab.sh_size, '\0');
        if (!read_at(dyn.data(), dyn.size() * sizeof(Elf64_Dyn), s.sh_offset) ||
            !read_at(names.data(), names.size(), strtab.sh_offset))
            continue;
        for (const Elf64_Dyn& d : dyn)
            if (d.d_tag == DT_NEEDED && d.d_un.d_val < names.size() &&
                (std::strncmp(names.c_str() + d.d_un.d_val, "libmpi.so", 9) == 0 ||
                 std::strncmp(names.c_str() + d.d_un.d_val, "libmpi_", 7) == 0))
                return true;
    }
    return false;
}

std::string getenv_of(spank_t sp, const char* name) {
    char buf[4096];
    if (spank_getenv(sp, name, buf, sizeof buf) != ESPANK_SUCCESS) return "";
    return buf;
}

}  // namespace

Result<void> prepare_mpi_step(spank_t sp, const JobSettings& settings) {
    uint32_t job = 0, step = 0, node = 0;
    spank_get_item(sp, S_JOB_ID, &job);
    spank_get_item(sp, S_JOB_STEPID, &step);
    spank_get_item(sp, S_JOB_NODEID, &node);
    if (!settings.active || settings.mpi == MpiRanks::None || state().site.mpi_dir.empty() ||
        step == SLURM_BATCH_SCRIPT || step == SLURM_EXTERN_CONT || step == SLURM_INTERACTIVE_STEP)
        return ok();
    // Abstract: no file the ranks and the agent must share; a random name, so nobody can
    // take it first (and the agent takes only the job's user's connections).
    unsigned char b[16];
    if (::getrandom(b, sizeof b, 0) != sizeof b) return sys_error("getrandom");
    std::string name = fmt::format("@ckpt-mpi-{}-{}-{}-", job, step, node);
    for (unsigned char c : b) name += fmt::format("{:02x}", c);
    state().mpi_control = name;
    state().mpi_ranks = settings.mpi;
    return ok();
}

Result<void> put_rank_on_ckpt_mpi(spank_t sp) {
    auto& st = state();
    if (st.mpi_control.empty() || getenv_of(sp, "PMIX_RANK").empty()) return ok();
    int argc = 0;
    char** argv = nullptr;
    if (st.mpi_ranks != MpiRanks::All &&
        (spank_get_item(sp, S_JOB_ARGV, &argc, &argv) != ESPANK_SUCCESS || argc < 1 || !needs_libmpi(argv[0])))
        return ok();
    std::string path = st.site.mpi_dir;
    if (std::string old = getenv_of(sp, "LD_LIBRARY_PATH"); !old.empty()) path += ":" + old;
    for (auto [name, value] : {std::pair<const char*, const std::string&>{"LD_LIBRARY_PATH", path},
                               {mpi::control::kSocketEnv, st.mpi_control}})
        if (spank_err_t rc = spank_setenv(sp, name, value.c_str(), 1); rc != ESPANK_SUCCESS)
            return error("spank_setenv({}): {}", name, spank_strerror(rc));
    return ok();
}

}  // namespace ckpt::slurm::spank
