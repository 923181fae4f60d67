#include "ckpt/slurm/coordination.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "ckpt/base/strings.h"

namespace ckpt::slurm {

std::string step_name(uint32_t step) { return step == kBatchStep ? "batch" : std::to_string(step); }
std::string request_name(uint32_t step) { return fmt::format("step-{}.request", step_name(step)); }
std::string drain_name(uint32_t step) { return fmt::format("step-{}.drain", step_name(step)); }
std::string drained_name(uint32_t step, uint64_t seq, uint32_t node) {
    return report_name(step, seq, node) + ".drained";
}
std::string report_name(uint32_t step, uint64_t seq, uint32_t node) {
    return fmt::format("step-{}.set-{}.node-{}", step_name(step), seq, node);
}
std::string status_name(uint32_t step, uint32_t node) {
    return fmt::format("step-{}.node-{}.status", step_name(step), node);
}
std::string step_done_name(uint32_t step) { return fmt::format("step-{}.done", step_name(step)); }
std::string mpi_lead_name(uint32_t step) { return fmt::format("step-{}.mpi-lead", step_name(step)); }

std::string seal(std::string body) {
    return body + fmt::format("sum {:016x}\n", XXH3_64bits(body.data(), body.size()));
}

Result<std::string> unseal(std::string_view text, std::string_view what) {
    size_t end = text.size();
    if (end == 0 || text[end - 1] != '\n') return error("{}: truncated (no final line)", what);
    size_t start = text.rfind('\n', end - 2);
    start = start == std::string_view::npos ? 0 : start + 1;
    std::string_view last = text.substr(start, end - 1 - start);
    std::string_view body = text.substr(0, start);
    if (!last.starts_with("sum ")) return error("{}: no checksum line", what);
    auto sum = parse_uint(last.substr(4), 16);
    if (!sum || *sum != XXH3_64bits(body.data(), body.size()))
        return error("{}: checksum mismatch (torn or edited)", what);
    return std::string(body);
}

Fields parse_fields(std::string_view body) {
    Fields f;
    for (std::string_view line : split(body, '\n')) {
        if (line.empty()) continue;
        size_t sp = line.find(' ');
        if (sp == std::string_view::npos)
            f.emplace(std::string(line), "");
        else
            f.emplace(std::string(line.substr(0, sp)), std::string(line.substr(sp + 1)));
    }
    return f;
}

std::optional<std::string> field(const Fields& f, const std::string& key) {
    auto it = f.find(key);
    if (it == f.end()) return std::nullopt;
    return it->second;
}

Result<uint64_t> uint_field(const Fields& f, const std::string& key, std::string_view what) {
    auto v = field(f, key);
    if (!v) return error("{}: no '{}' line", what, key);
    auto n = parse_uint(*v);
    if (!n) return error("{}: '{}' is not a number: {}", what, key, *v);
    return *n;
}

Result<UniqueFd> open_folder(const std::string& path, std::optional<uid_t> owner) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return sys_error("open folder {}", path);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return sys_error("stat {}", path);
    if (owner && st.st_uid != *owner)
        return error_code(EPERM, "{} belongs to uid {}, not to uid {}", path, st.st_uid, *owner);
    return fd;
}

Result<void> write_file_at(int dir, const std::string& name, std::string_view content) {
    uint64_t r = 0;
    if (::getrandom(&r, sizeof r, 0) != static_cast<ssize_t>(sizeof r))
        return sys_error("getrandom for a temporary name");
    std::string tmp = fmt::format(".{}.tmp.{:016x}", name, r);
    UniqueFd fd(
        ::openat(dir, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) return sys_error("create {}", tmp);
    auto fail = [&](Error e) {
        ::unlinkat(dir, tmp.c_str(), 0);
        return e;
    };
    if (auto w = write_all(fd.get(), content.data(), content.size()); !w)
        return fail(std::move(w).error().context("write {}", tmp));
    if (::fsync(fd.get()) != 0) return fail(sys_error("fsync {}", tmp));
    if (::renameat(dir, tmp.c_str(), dir, name.c_str()) != 0)
        return fail(sys_error("rename {} to {}", tmp, name));
    return ok();
}

Result<std::string> read_file_at(int dir, const std::string& name) {
    UniqueFd fd(::openat(dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!fd) return sys_error("open {}", name);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return sys_error("stat {}", name);
    if (!S_ISREG(st.st_mode)) return error("{}: not a regular file", name);
    std::string out;
    char buf[8192];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) return sys_error("read {}", name);
        if (n == 0) break;
        out.append(buf, static_cast<size_t>(n));
        if (out.size() > (64u << 20)) return error("{}: larger than 64 MiB", name);
    }
    return out;
}

std::string encode(const SetRequest& r) {
    return seal(fmt::format("ckpt-set-request 1\nseq {}\ntrigger {}\nrun {}\nparent {}\ntracked {}\n", r.seq,
                            set::to_string(r.trigger), r.restart_count, r.parent, r.tracked));
}

Result<SetRequest> decode_request(std::string_view text) {
    std::string body = CKPT_TRY(unseal(text, "set request"));
    Fields f = parse_fields(body);
    if (field(f, "ckpt-set-request") != "1") return error("set request: unknown format");
    SetRequest r;
    r.seq = CKPT_TRY(uint_field(f, "seq", "set request"));
    r.trigger = CKPT_TRY(set::parse_trigger(field(f, "trigger").value_or("")));
    r.restart_count = static_cast<uint32_t>(CKPT_TRY(uint_field(f, "run", "set request")));
    if (field(f, "parent")) r.parent = CKPT_TRY(uint_field(f, "parent", "set request"));
    if (r.parent >= r.seq) return error("set request: parent set {} is not older than set {}", r.parent, r.seq);
    if (field(f, "tracked")) r.tracked = CKPT_TRY(uint_field(f, "tracked", "set request"));
    if (r.parent && !r.tracked) r.tracked = r.parent;
    if (r.tracked >= r.seq || (r.parent && r.tracked != r.parent))
        return error("set request: tracked set {} is not older than set {} or not its parent", r.tracked, r.seq);
    return r;
}

// One line per member ("member ID DIR") followed by its files ("file BYTES XXH3 NAME"): the
// name is last, so it may hold spaces.
std::string encode(const NodeReport& r) {
    std::string s =
        fmt::format("ckpt-node-report 1\nseq {}\nnode_id {}\nnode {}\n", r.seq, r.node_id, r.node);
    if (!r.failure.empty()) s += fmt::format("failure {}\n", r.failure);
    for (const auto& m : r.members) {
        s += fmt::format("member {} {}\n", m.member_id, m.image_dir);
        for (const auto& f : m.files)
            s += fmt::format("file {} {:016x} {}\n", f.bytes, f.checksum, f.name);
    }
    return seal(std::move(s));
}

Result<NodeReport> decode_report(std::string_view text) {
    std::string body = CKPT_TRY(unseal(text, "node report"));
    NodeReport r;
    bool header = false;
    for (std::string_view line : split(body, '\n')) {
        if (line.empty()) continue;
        size_t sp = line.find(' ');
        std::string_view key = line.substr(0, sp),
                         rest = sp == line.npos ? "" : line.substr(sp + 1);
        auto bad = [&] { return error("node report: bad line '{}'", line); };
        if (key == "ckpt-node-report") {
            header = rest == "1";
        } else if (key == "seq") {
            r.seq = CKPT_TRY(parse_uint(rest));
        } else if (key == "node_id") {
            r.node_id = static_cast<uint32_t>(CKPT_TRY(parse_uint(rest)));
        } else if (key == "node") {
            r.node = rest;
        } else if (key == "failure") {
            r.failure = rest;
        } else if (key == "member") {
            size_t s2 = rest.find(' ');
            if (s2 == rest.npos) return bad();
            auto id = parse_int(rest.substr(0, s2));
            if (!id) return bad();
            r.members.push_back({static_cast<int32_t>(*id), std::string(rest.substr(s2 + 1)), {}});
        } else if (key == "file") {
            auto parts = split(rest, ' ');
            if (parts.size() < 3 || r.members.empty()) return bad();
            auto bytes = parse_uint(parts[0]);
            auto sum = parse_uint(parts[1], 16);
            if (!bytes || !sum) return bad();
            size_t name_at = parts[0].size() + parts[1].size() + 2;
            r.members.back().files.push_back({std::string(rest.substr(name_at)), *bytes, *sum});
        } else {
            return bad();
        }
    }
    if (!header) return error("node report: unknown format");
    return r;
}

}  // namespace ckpt::slurm

namespace ckpt::slurm {

std::optional<set::SetRecord> set_ended_after(set::JobStore& store, uint64_t before) {
    // The writer replaces the index atomically; a failed reload is a moment to retry.
    if (!store.reload()) return std::nullopt;
    for (const set::SetRecord& s : store.index().sets)
        if (s.seq > before && s.state != set::SetState::Writing) return s;
    return std::nullopt;
}

}  // namespace ckpt::slurm
