#include "ckpt/slurm/mpirun_args.h"

#include <cerrno>
#include <charconv>

namespace ckpt::slurm {

namespace {

Result<unsigned> positive(std::string_view option, std::string_view value) {
    unsigned n = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (ec != std::errc() || end != value.data() + value.size() || n == 0)
        return error_code(EINVAL, "mpirun option {}: '{}' is not a positive number", option, value);
    return n;
}

// mpirun's --map-by: the placements srun makes the same way (no modifiers).
Result<std::string> map_by(std::string_view value) {
    if (value.starts_with("ppr:") && value.ends_with(":node")) {  // ppr:N:node: N ranks per node
        unsigned n = CKPT_TRY(positive("--map-by ppr", value.substr(4, value.size() - 4 - 5)));
        return "--ntasks-per-node=" + std::to_string(n);
    }
    if (value == "node") return std::string("--distribution=cyclic");
    if (value == "slot" || value == "core") return std::string("--distribution=block");
    return error_code(EINVAL, "mpirun option --map-by {} has no srun equivalent here (use ppr:N:node, node, slot or core)",
                      value);
}

Result<std::string> bind_to(std::string_view value) {
    if (value == "none") return std::string("--cpu-bind=none");
    if (value == "core") return std::string("--cpu-bind=cores");
    if (value == "socket") return std::string("--cpu-bind=sockets");
    if (value == "hwthread") return std::string("--cpu-bind=threads");
    return error_code(EINVAL, "mpirun option --bind-to {} has no srun equivalent here (use none, core, socket or hwthread)",
                      value);
}

bool is_valid_env_name(std::string_view name) {
    if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
    for (char c : name)
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return false;
    return true;
}

}  // namespace

Result<SrunCommand> srun_for_mpirun(const std::vector<std::string>& in) {
    SrunCommand out;
    // srun ends the whole step when a rank fails, as mpirun does.
    out.args = {"--mpi=pmix", "--kill-on-bad-exit=1"};
    bool exported = false;
    size_t i = 0;
    for (; i < in.size(); ++i) {
        std::string_view a = in[i];
        if (a == "--") {
            ++i;
            break;
        }
        if (!a.starts_with("-") || a == "-") break;  // the program
        // --name=value as well as --name value; single-dash long names as mpirun takes them.
        std::string_view name = a, inline_value;
        bool has_inline = false;
        if (a.starts_with("--") && a.find('=') != std::string_view::npos) {
            name = a.substr(0, a.find('='));
            inline_value = a.substr(a.find('=') + 1);
            has_inline = true;
        }
        auto value = [&]() -> Result<std::string_view> {
            if (has_inline) return inline_value;
            if (i + 1 >= in.size()) return error_code(EINVAL, "mpirun option {} needs a value", name);
            return std::string_view(in[++i]);
        };
        auto is = [&](std::initializer_list<std::string_view> names) {
            for (std::string_view n : names)
                if (name == n) return true;
            return false;
        };
        if (is({"-n", "-np", "--n", "--np", "-c"})) {
            out.args.push_back("--ntasks=" + std::to_string(CKPT_TRY(positive(name, CKPT_TRY(value())))));
        } else if (is({"-N", "-npernode", "--npernode"})) {
            out.args.push_back("--ntasks-per-node=" + std::to_string(CKPT_TRY(positive(name, CKPT_TRY(value())))));
        } else if (is({"--map-by", "-map-by"})) {
            out.args.push_back(CKPT_TRY(map_by(CKPT_TRY(value()))));
        } else if (is({"--bind-to", "-bind-to"})) {
            out.args.push_back(CKPT_TRY(bind_to(CKPT_TRY(value()))));
        } else if (is({"-x"})) {
            // NAME=VALUE is set for the ranks; a bare NAME already travels with srun's
            // environment (--export=ALL).
            std::string_view v = CKPT_TRY(value());
            std::string_view var = v.substr(0, v.find('='));
            if (!is_valid_env_name(var)) return error_code(EINVAL, "mpirun option -x {}: not a variable name", v);
            if (v.find('=') != std::string_view::npos)
                out.env.emplace_back(std::string(var), std::string(v.substr(v.find('=') + 1)));
            exported = true;
        } else if (is({"--mca", "-mca", "--gmca", "-gmca"})) {
            std::string_view key = CKPT_TRY(value());
            if (!is_valid_env_name(key)) return error_code(EINVAL, "mpirun option {} {}: not a parameter name", name, key);
            if (i + 1 >= in.size()) return error_code(EINVAL, "mpirun option {} {} needs a value", name, key);
            out.env.emplace_back("OMPI_MCA_" + std::string(key), in[++i]);
            exported = true;
        } else if (is({"--wdir", "-wdir", "--wd", "-wd"})) {
            out.args.push_back("--chdir=" + std::string(CKPT_TRY(value())));
        } else if (is({"--oversubscribe", "-oversubscribe"})) {
            out.args.push_back("--overcommit");
        } else if (is({"--tag-output", "-tag-output"})) {
            out.args.push_back("--label");
        } else if (is({"-q", "--quiet"})) {
            out.args.push_back("--quiet");
        } else if (is({"--allow-run-as-root", "-allow-run-as-root"})) {
            // mpirun's own guard; srun has none to lift.
        } else {
            return error_code(EINVAL,
                              "mpirun option {} has no translation to srun; run srun --mpi=pmix directly "
                              "(docs/mpi.md, \"mpirun in a job script\")",
                              name);
        }
    }
    if (i >= in.size()) return error_code(EINVAL, "no program to run");
    if (exported) out.args.push_back("--export=ALL");
    for (; i < in.size(); ++i) out.args.push_back(in[i]);
    return out;
}

}  // namespace ckpt::slurm
