#include "ckpt/slurm/options.h"

#include <stdlib.h>

#include <algorithm>
#include <filesystem>

#include "ckpt/base/strings.h"
#include "ckpt/slurm/interval.h"

namespace ckpt::slurm {

namespace {

Result<std::string> absolute_path(std::string_view value, std::string_view what) {
    if (value.empty() || value.front() != '/')
        return error_code(EINVAL, "{} '{}' must be an absolute path", what, value);
    if (value.find_first_of("\n\r\t ,") != std::string_view::npos)
        return error_code(EINVAL, "{} '{}' must not contain blanks or commas", what, value);
    return std::string(value);
}

Result<uint32_t> count(std::string_view value, uint32_t lo, uint32_t hi, std::string_view what) {
    auto n = parse_uint(value);
    if (!n || *n < lo || *n > hi)
        return error_code(EINVAL, "{} '{}' must be a whole number from {} to {}", what, value, lo, hi);
    return static_cast<uint32_t>(*n);
}

Result<bool> yes_no(std::string_view value, std::string_view what) {
    if (value == "yes" || value == "1" || value == "true") return true;
    if (value == "no" || value == "0" || value == "false") return false;
    return error_code(EINVAL, "{} '{}' must be yes or no", what, value);
}

// The folder a path names: lexically normal, without a trailing slash, and through every
// link when it exists here (the site root may be reached through a link, e.g. /shared ->
// /gpfs/shared).
std::string canonical_folder(const std::string& path) {
    if (char* real = ::realpath(path.c_str(), nullptr)) {
        std::string r = real;
        ::free(real);
        return r;
    }
    std::string p = std::filesystem::path(path).lexically_normal().string();
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    return p;
}

}  // namespace

bool same_folder(const std::string& a, const std::string& b) {
    return canonical_folder(a) == canonical_folder(b);
}

Result<PluginConfig> parse_plugin_args(const std::vector<std::string_view>& args) {
    PluginConfig c;
    bool keep_given = false;
    for (std::string_view arg : args) {
        size_t eq = arg.find('=');
        if (eq == std::string_view::npos)
            return error_code(EINVAL, "plugin argument '{}': expected key=value", arg);
        std::string_view key = arg.substr(0, eq), value = arg.substr(eq + 1);
        auto ctx = [&](Error e) { return std::move(e.context("plugin argument {}", key)); };
        if (key == "dir") {
            auto r = absolute_path(value, "checkpoint root");
            if (!r) return ctx(std::move(r).error());
            c.root = *r;
        } else if (key == "engine" || key == "agent") {
            auto r = absolute_path(value, "program");
            if (!r) return ctx(std::move(r).error());
            (key == "engine" ? c.engine : c.agent) = *r;
        } else if (key == "mpi") {
            auto r = absolute_path(value, "folder of ckpt's libmpi");
            if (!r) return ctx(std::move(r).error());
            c.mpi_dir = *r;
        } else if (key == "interval" || key == "min_interval") {
            auto r = parse_interval(value);
            if (!r) return ctx(std::move(r).error());
            (key == "interval" ? c.interval : c.min_interval) = *r;
        } else if (key == "keep" || key == "max_keep") {
            auto r = count(value, 1, 100000, key);
            if (!r) return ctx(std::move(r).error());
            (key == "keep" ? c.keep : c.max_keep) = *r;
            keep_given |= key == "keep";
        } else if (key == "full_every") {
            auto r = count(value, 1, 64, key);
            if (!r) return ctx(std::move(r).error());
            c.full_every = *r;
        } else if (key == "compress") {
            auto r = count(value, 0, kMaxCompressLevel, key);
            if (!r) return ctx(std::move(r).error());
            c.compress = *r;
        } else if (key == "max_overhead") {
            auto r = count(value, 1, 100, key);
            if (!r) return ctx(std::move(r).error());
            c.max_overhead = *r;
        } else if (key == "user_dir") {
            auto r = yes_no(value, key);
            if (!r) return ctx(std::move(r).error());
            c.user_dir = *r;
        } else if (key == "local_dir") {
            auto r = absolute_path(value, "node-local checkpoint folder");
            if (!r) return ctx(std::move(r).error());
            if (auto e = expand_local_dir(*r, "node"); !e) return ctx(std::move(e).error());
            c.local_dir = *r;
        } else if (key == "drain_hold") {
            auto r = absolute_path(value, "drain hold file");
            if (!r) return ctx(std::move(r).error());
            c.drain_hold = *r;
        } else if (key == "users") {
            c.users.clear();
            for (auto u : split(value, ','))
                if (!trim(u).empty()) c.users.emplace_back(trim(u));
        } else {
            return error_code(EINVAL,
                              "unknown plugin argument '{}' (known: dir, engine, agent, interval, "
                              "min_interval, keep, max_keep, full_every, max_overhead, compress, user_dir, users, mpi, local_dir, "
                              "drain_hold)",
                              arg);
        }
    }
    if (c.interval != 0 && c.interval < c.min_interval)
        return error_code(EINVAL, "plugin argument interval={} is below min_interval={}",
                          format_interval(c.interval), format_interval(c.min_interval));
    if (c.keep > c.max_keep) {
        if (keep_given)
            return error_code(EINVAL, "plugin argument keep={} is above max_keep={}", c.keep,
                              c.max_keep);
        c.keep = c.max_keep;
    }
    return c;
}

Result<std::string> expand_local_dir(std::string_view pattern, std::string_view node) {
    if (node.empty() || node == "." || node == ".." ||
        node.find_first_of("/\n\r\t ,%") != std::string_view::npos)
        return error_code(EINVAL, "node name '{}' cannot name a folder", node);
    std::string out;
    for (size_t i = 0; i < pattern.size(); ++i) {
        if (pattern[i] != '%') {
            out += pattern[i];
        } else if (i + 1 < pattern.size() && pattern[i + 1] == 'n') {
            out += node;
            ++i;
        } else {
            return error_code(EINVAL, "local_dir '{}': only %n (the node's name) may follow %", pattern);
        }
    }
    return out;
}

std::string RestoreRequest::to_string() const {
    return set ? fmt::format("{}:{}", job_id, *set) : fmt::format("{}", job_id);
}

Result<RestoreRequest> parse_restore(std::string_view text) {
    auto bad = [&] {
        return error_code(EINVAL, "invalid restore request '{}': expected <jobid> or <jobid>:<set>",
                          text);
    };
    auto parts = split(trim(text), ':');
    if (parts.size() > 2) return bad();
    RestoreRequest r;
    auto job = parse_uint(parts[0]);
    if (!job || *job == 0 || *job > UINT32_MAX) return bad();
    r.job_id = *job;
    if (parts.size() == 2) {
        auto set = parse_uint(parts[1]);
        if (!set) return bad();
        r.set = *set;
    }
    return r;
}

Result<void> set_option(JobOptions& opts, Option which, std::string_view value,
                        const PluginConfig& site) {
    switch (which) {
    case Option::Interval: {
        uint64_t s = CKPT_TRY_CTX(parse_interval(value), "--checkpoint-interval");
        if (s != 0 && s < site.min_interval)
            return error_code(EINVAL,
                              "--checkpoint-interval={}: shorter than this cluster's minimum of {}",
                              value, format_interval(site.min_interval));
        opts.interval = s;
        return ok();
    }
    case Option::Dir: {
        std::string dir = CKPT_TRY_CTX(absolute_path(value, "directory"), "--checkpoint-dir");
        // user_dir=no forbids another folder; naming the site's own root (ckpt-job restore
        // does) changes nothing.
        if (!site.user_dir && !same_folder(dir, site.root))
            return error_code(EPERM,
                              "--checkpoint-dir={}: choosing the folder is disabled on this "
                              "cluster (checkpoints go to {})",
                              value, site.root);
        opts.dir = dir;
        return ok();
    }
    case Option::Keep:
        opts.keep = CKPT_TRY_CTX(count(value, 1, site.max_keep, "count"), "--checkpoint-keep");
        return ok();
    case Option::Restore:
        opts.restore = CKPT_TRY_CTX(parse_restore(value), "--checkpoint-restore");
        return ok();
    case Option::NoRestart:
        opts.no_restart = true;
        return ok();
    case Option::Mpi:
        opts.mpi = CKPT_TRY_CTX(parse_mpi_ranks(value), "--checkpoint-mpi");
        return ok();
    }
    return error_code(EINVAL, "unknown option");
}

Result<JobSettings> resolve(const JobOptions& opts, const PluginConfig& site, std::string_view user) {
    JobSettings s;
    bool allowed = site.users.empty() ||
                   std::find(site.users.begin(), site.users.end(), user) != site.users.end();
    if (!allowed) {
        if (opts.any())
            return error_code(EPERM, "user {} may not use checkpointing on this cluster", user);
        return s;  // the site's default interval applies only to allowed users
    }
    s.active = opts.any() || site.interval != 0;
    s.interval = opts.interval.value_or(site.interval);
    s.dir = opts.dir.value_or(site.root);
    // The site root by another spelling is the site root: one job folder path everywhere.
    if (opts.dir && same_folder(*opts.dir, site.root)) s.dir = site.root;
    s.keep = opts.keep.value_or(site.keep);
    s.restore = opts.restore;
    s.restart = !opts.no_restart;
    s.mpi = opts.mpi.value_or(MpiRanks::Linked);
    return s;
}

Result<MpiRanks> parse_mpi_ranks(std::string_view text) {
    if (text == "auto") return MpiRanks::Linked;
    if (text == "always") return MpiRanks::All;
    if (text == "never") return MpiRanks::None;
    return error_code(EINVAL, "'{}' is not one of auto, always, never", text);
}

std::string_view to_string(MpiRanks m) {
    switch (m) {
    case MpiRanks::Linked: return "auto";
    case MpiRanks::All: return "always";
    case MpiRanks::None: return "never";
    }
    return "?";
}

std::vector<std::pair<std::string, std::string>> job_environment(const JobSettings& s) {
    std::vector<std::pair<std::string, std::string>> env;
    if (!s.active) return env;
    env.emplace_back("CKPT_INTERVAL", std::to_string(s.interval));
    env.emplace_back("CKPT_DIR", s.dir);
    env.emplace_back("CKPT_KEEP", std::to_string(s.keep));
    env.emplace_back("CKPT_RESTART", s.restart ? "1" : "0");
    if (s.restore) env.emplace_back("CKPT_RESTORE", s.restore->to_string());
    return env;
}

std::string format_interval(uint64_t seconds) {
    if (seconds == 0) return "0";
    if (seconds % 86400 == 0) return fmt::format("{}d", seconds / 86400);
    if (seconds % 3600 == 0) return fmt::format("{}h", seconds / 3600);
    if (seconds % 60 == 0) return fmt::format("{}m", seconds / 60);
    return fmt::format("{}s", seconds);
}

}  // namespace ckpt::slurm
