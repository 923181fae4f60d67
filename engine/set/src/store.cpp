#include "ckpt/set/store.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>

#include "ckpt/base/log.h"
#include "ckpt/image/image_file.h"
#include "ckpt/set/index_h5.h"
#include "ckpt/image/image_names.h"
#include "fsutil.h"
#include "mm.pb.h"
#include "set_manifest.pb.h"

namespace ckpt::set {
namespace fs = std::filesystem;

namespace {

std::string abandoned(uint32_t run) {
    return fmt::format("abandoned: its writer (run {}) ended before committing", run);
}

std::string user_name(uid_t uid) {
    passwd* pw = ::getpwuid(uid);
    return pw ? pw->pw_name : fmt::format("uid {}", uid);
}

image::SetManifest to_manifest(const SetRecord& s, const JobInfo& job) {
    image::SetManifest m;
    m.set_format_version(kIndexFormatVersion);
    m.set_jobid(job.jobid);
    m.set_seq(s.seq);
    m.set_restart_count(s.restart_count);
    m.set_trigger(std::string(to_string(s.trigger)));
    m.set_step_id(s.step_id);
    m.set_step_command(s.step_command);
    m.set_start_ns(s.start_ns);
    m.set_end_ns(s.end_ns);
    m.set_expected_members(s.expected_members);
    m.set_state(std::string(to_string(s.state)));
    m.set_node_count(s.node_count);
    m.set_failure(s.failure);
    m.set_levels(s.levels());
    m.set_parent_set(s.parent);
    for (const MemberRecord& r : s.members) {
        auto* pm = m.add_members();
        pm->set_member_id(r.member_id);
        pm->set_node(r.node);
        pm->set_image_dir(r.image_dir);
        pm->set_bytes(r.bytes);
        pm->set_xxh3(r.checksum);
        pm->set_dump_ns(r.dump_ns);
        pm->set_state(r.state == MemberState::Done     ? image::SetMember::DONE
                      : r.state == MemberState::Failed ? image::SetMember::FAILED
                                                       : image::SetMember::WRITING);
        for (const FileRecord& f : r.files) {
            auto* pf = pm->add_files();
            pf->set_name(f.name);
            pf->set_bytes(f.bytes);
            pf->set_xxh3(f.checksum);
        }
    }
    auto* pj = m.mutable_job();
    pj->set_jobid(job.jobid);
    pj->set_user(job.user);
    pj->set_uid(job.uid);
    pj->set_gid(job.gid);
    pj->set_name(job.name);
    pj->set_cluster(job.cluster);
    pj->set_submit_options(job.submit_options);
    pj->set_batch_script(job.batch_script);
    pj->set_environment(job.environment);
    pj->set_incarnation(job.incarnation);
    for (const FileRecord& f : job.saved_files) {
        auto* pf = pj->add_saved_files();
        pf->set_name(f.name);
        pf->set_bytes(f.bytes);
        pf->set_xxh3(f.checksum);
    }
    return m;
}

Result<SetRecord> from_manifest(const image::SetManifest& m) {
    SetRecord s;
    s.seq = m.seq();
    s.state = CKPT_TRY(parse_set_state(m.state()));
    s.trigger = CKPT_TRY(parse_trigger(m.trigger()));
    s.start_ns = m.start_ns();
    s.end_ns = m.end_ns();
    s.step_id = m.step_id();
    s.step_command = m.step_command();
    s.node_count = m.node_count();
    s.expected_members = m.expected_members();
    s.restart_count = m.restart_count();
    s.failure = m.failure();
    // A manifest before format 4 has no levels: its set was written to the shared level only.
    if (m.format_version() >= 4) CKPT_TRY(parse_levels(m.levels(), s));
    s.parent = m.parent_set();
    if (s.parent >= s.seq) return error("set {}: parent set {} is not older than the set", s.seq, s.parent);
    for (const auto& pm : m.members()) {
        MemberRecord r;
        r.member_id = pm.member_id();
        r.node = pm.node();
        r.image_dir = pm.image_dir();
        r.bytes = pm.bytes();
        r.checksum = pm.xxh3();
        r.dump_ns = pm.dump_ns();
        r.state = pm.state() == image::SetMember::DONE     ? MemberState::Done
                  : pm.state() == image::SetMember::FAILED ? MemberState::Failed
                                                           : MemberState::Writing;
        for (const auto& pf : pm.files()) r.files.push_back({pf.name(), pf.bytes(), pf.xxh3()});
        s.members.push_back(std::move(r));
    }
    return s;
}

JobInfo job_from_manifest(const image::SetManifest& m) {
    const auto& pj = m.job();
    JobInfo job{pj.jobid(),   pj.user(),           pj.uid(),          pj.gid(),
                pj.name(),    pj.cluster(),        pj.submit_options(), pj.batch_script(),
                pj.environment(), pj.incarnation(), {}};
    for (const auto& pf : pj.saved_files()) job.saved_files.push_back({pf.name(), pf.bytes(), pf.xxh3()});
    return job;
}

// Where a job folder written by another job of the same id goes: beside it, named after
// that job's incarnation, so nothing of it is lost and the id's folder is free.
// The incarnation comes from the job's environment (the user's to change): only a plain word
// becomes part of a name; anything else is replaced by its hash.
std::string set_aside_name(uint64_t jobid, const std::string& incarnation) {
    bool plain = !incarnation.empty() && incarnation.size() <= 64 &&
                 std::all_of(incarnation.begin(), incarnation.end(),
                             [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_'; });
    if (plain) return fmt::format("{}.earlier-{}", jobid, incarnation);
    return fmt::format("{}.earlier-{:016x}", jobid,
                       image::checksum(incarnation.data(), incarnation.size()));
}

Result<image::SetManifest> read_manifest(const std::string& set_dir) {
    image::SetManifest m;
    CKPT_TRY(image::read_image(set_dir + "/" + kManifestName, image::Kind::SetManifest, &m));
    return m;
}

// What lies in a job folder besides the index: set folders by seq, and leftovers of
// interrupted writes and deletions (temp files, .deleted- folders).
struct FolderScan {
    std::map<uint64_t, std::string> sets;
    std::vector<std::string> leftovers;
};

Result<FolderScan> scan_job_folder(const std::string& dir) {
    FolderScan scan;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        std::string name = it->path().filename().string();
        if (auto seq = parse_set_folder_name(name)) {
            scan.sets[*seq] = name;
        } else if (name.starts_with(".deleted-") || name.find(".tmp.") != std::string::npos) {
            scan.leftovers.push_back(name);
        }
    }
    if (ec) return error_code(ec.value(), "list {}: {}", dir, ec.message());
    return scan;
}

// Checks a member's files against their records (sizes only when full is false).
Result<void> check_member_files(const std::string& job_dir, const MemberRecord& m, bool full) {
    if (m.state != MemberState::Done)
        return error_code(EINVAL, "member {}: state {}", m.member_id, to_string(m.state));
    if (m.files.empty())
        return error_code(EINVAL, "member {}: no image files recorded", m.member_id);
    if (member_digest(m.files) != m.checksum)
        return error_code(EINVAL, "member {}: recorded checksum does not match its file list",
                          m.member_id);
    for (const FileRecord& f : m.files) {
        std::string p = job_dir + "/" + m.image_dir + "/" + f.name;
        struct stat st;
        if (!is_plain_relative_path(m.image_dir) || !is_plain_relative_path(f.name))
            return error_code(EINVAL, "member {}: {}: names a file outside the job folder",
                              m.member_id, p);
        if (::lstat(p.c_str(), &st) != 0) return sys_error("member {}: {}", m.member_id, p);
        if (!S_ISREG(st.st_mode))
            return error_code(EINVAL, "member {}: {}: not a regular file", m.member_id, p);
        if (static_cast<uint64_t>(st.st_size) != f.bytes)
            return error_code(EIO, "member {}: {}: {} bytes, expected {} (truncated or changed)",
                              m.member_id, p, st.st_size, f.bytes);
        if (!full) continue;
        FileRecord now = CKPT_TRY_CTX(fsutil::checksum_file(p, f.name), "member {}", m.member_id);
        if (now.bytes != f.bytes || now.checksum != f.checksum)
            return error_code(EIO,
                              "member {}: {}: checksum mismatch (xxh3 {:016x}, expected {:016x})",
                              m.member_id, p, now.checksum, f.checksum);
    }
    return ok();
}

// The set's members against its record: count, then every file.
Result<void> check_set_files(const std::string& job_dir, const SetRecord& s, bool full) {
    if (s.members.size() != s.expected_members)
        return error_code(EINVAL, "{} of {} members recorded", s.members.size(),
                          s.expected_members);
    for (const MemberRecord& m : s.members) CKPT_TRY(check_member_files(job_dir, m, full));
    return ok();
}

// An incremental member against its parent (the member of the same id in the parent set):
// every page map of the child that reads pages from a parent names the parent member's
// folder, and the parent's page map of the same process is recorded and is, on disk, the
// one the child was dumped after (its image checksum and dump id as the child records
// them). The parent's files themselves are checked against their records with its set.
Result<void> check_member_parent(const std::string& job_dir, const MemberRecord& child, const MemberRecord& parent) {
    for (const FileRecord& f : child.files) {
        if (f.name.find('/') != std::string::npos || image::names::kind_of(f.name) != image::Kind::PageMap) continue;
        const std::string where = job_dir + "/" + child.image_dir + "/" + f.name;
        image::PageMap pm;
        CKPT_TRY_CTX(image::read_image(where, image::Kind::PageMap, &pm), "member {}", child.member_id);
        if (std::none_of(pm.runs().begin(), pm.runs().end(), [](const auto& r) { return r.in_parent(); })) continue;
        if (pm.parent_dir() != parent.image_dir)
            return error_code(EINVAL, "member {}: {}: its parent dump is {}, not the parent set's member {}", child.member_id,
                              where, pm.parent_dir(), parent.image_dir);
        auto rec = std::find_if(parent.files.begin(), parent.files.end(), [&](const FileRecord& p) { return p.name == f.name; });
        if (rec == parent.files.end())
            return error_code(ENOENT, "member {}: {}: its parent {}/{} is not recorded", child.member_id, where,
                              parent.image_dir, f.name);
        const std::string parent_where = job_dir + "/" + parent.image_dir + "/" + f.name;
        image::PageMap ppm;
        uint64_t sum = 0;
        CKPT_TRY_CTX(image::read_image(parent_where, image::Kind::PageMap, &ppm, &sum), "member {}: parent dump",
                     child.member_id);
        // (The file itself is checked against its record with the parent set.)
        if (sum != pm.parent_pagemap_xxh3() || ppm.dump_id() != pm.parent_dump_id())
            return error_code(EINVAL, "member {}: {}: is not the page map {} was dumped after (replaced or changed since)",
                              child.member_id, parent_where, where);
    }
    return ok();
}

}  // namespace

Result<std::vector<FileRecord>> scan_member_files(const std::string& dir) {
    std::vector<FileRecord> files;
    std::error_code ec;
    fs::recursive_directory_iterator it(dir, ec), end;
    if (ec) return error_code(ec.value(), "list {}: {}", dir, ec.message());
    for (; it != end; it.increment(ec)) {
        if (ec) break;
        auto status = it->symlink_status(ec);
        if (ec) break;
        if (fs::is_directory(status)) continue;
        std::string rel = fs::relative(it->path(), dir).string();
        if (!fs::is_regular_file(status))
            return error_code(EINVAL,
                              "{}: not a regular file (image folders hold only files and folders)",
                              it->path().string());
        files.push_back(CKPT_TRY(fsutil::checksum_file(it->path().string(), rel)));
    }
    if (ec) return error_code(ec.value(), "list {}: {}", dir, ec.message());
    std::sort(files.begin(), files.end(),
              [](const FileRecord& a, const FileRecord& b) { return a.name < b.name; });
    return files;
}

bool is_plain_relative_path(std::string_view path) {
    if (path.empty() || path.front() == '/' || path.find('\0') != std::string_view::npos) return false;
    size_t start = 0;
    while (start <= path.size()) {
        size_t end = path.find('/', start);
        if (end == std::string_view::npos) end = path.size();
        std::string_view part = path.substr(start, end - start);
        if (part.empty() || part == "." || part == "..") return false;
        start = end + 1;
    }
    return true;
}

Result<void> check_reader(uint64_t jobid, const std::string& dir, uid_t owner, uid_t caller) {
    if (caller == 0 || caller == owner) return ok();
    return error_code(
        EACCES,
        "job {}: the checkpoints in {} belong to {} (uid {}), not to {} (uid {}): only the job's "
        "user or root may use them",
        jobid, dir, user_name(owner), owner, user_name(caller), caller);
}

Result<JobStore> JobStore::open_folder(const std::string& root, uint64_t jobid) {
    JobStore st;
    st.root_ = root;
    st.jobid_ = jobid;
    st.dir_ = fmt::format("{}/{}", root, jobid);
    struct stat sb;
    if (::lstat(st.dir_.c_str(), &sb) != 0) {
        if (errno == ENOENT)
            return error_code(ENOENT, "job {}: no checkpoints ({} does not exist)", jobid, st.dir_);
        return sys_error("job {}: {}", jobid, st.dir_);
    }
    if (!S_ISDIR(sb.st_mode))
        return error_code(ENOTDIR, "job {}: {} is not a folder", jobid, st.dir_);
    CKPT_TRY(check_reader(jobid, st.dir_, sb.st_uid, ::geteuid()));
    // Whoever else may write into the folder could have forged what it holds.
    if (sb.st_mode & (S_IWGRP | S_IWOTH))
        return error_code(EACCES, "job {}: {} is writable by group or others (mode {:o}): not trusted",
                          jobid, st.dir_, sb.st_mode & 07777);
    st.index_.job.jobid = jobid;
    st.index_.job.uid = sb.st_uid;
    st.index_.job.gid = sb.st_gid;
    return st;
}

Result<JobStore> JobStore::open(const std::string& root, uint64_t jobid) {
    JobStore st = CKPT_TRY(open_folder(root, jobid));
    CKPT_TRY(st.reload());
    return st;
}

Result<void> JobStore::reload() {
    auto idx = read_index(path(kIndexName));
    if (!idx) {
        const Error& e = idx.error();
        if (e.code() == ENOENT)
            return error_code(
                ENOENT,
                "job {}: {} is missing; `ckpt-job repair {}` rebuilds it from the set manifests",
                jobid_, path(kIndexName), jobid_);
        return error_code(
            e.code(), "job {}: {}; `ckpt-job repair {}` rebuilds the index from the set manifests",
            jobid_, e.message(), jobid_);
    }
    index_ = std::move(*idx);
    return ok();
}

Result<Index> JobStore::load_locked_index() const {
    JobStore copy;
    copy.dir_ = dir_;
    copy.jobid_ = jobid_;
    CKPT_TRY(copy.reload());
    return std::move(copy.index_);
}

Result<void> JobStore::replace_index(const Index& idx) {
    std::string tmp = fsutil::temp_path(path(kIndexName));
    CKPT_TRY_CTX(write_index_file(tmp, idx), "job {}", jobid_);
    if (::chmod(tmp.c_str(), 0600) != 0) return sys_error("job {}: chmod {}", jobid_, tmp);
    CKPT_TRY_CTX(fsutil::install(tmp, path(kIndexName)), "job {}", jobid_);
    index_ = idx;
    return ok();
}

Result<void> JobStore::check_fence(const Index& on_disk, std::string_view action,
                                   uint64_t seq) const {
    uint32_t fence = on_disk.fence();
    if (fence <= restart_count_) return ok();
    std::string what =
        seq ? fmt::format("job {} set {}", jobid_, seq) : fmt::format("job {}", jobid_);
    return error_code(
        ESTALE,
        "{}: refused to {}: this writer is run {} but run {} of the job owns its checkpoints now",
        what, action, restart_count_, fence);
}

Result<void> JobStore::write_manifest(const SetRecord& s) const {
    std::string set_dir = path(s.folder());
    std::string tmp = fsutil::temp_path(set_dir + "/" + kManifestName);
    CKPT_TRY_CTX(
        image::write_image(tmp, image::Kind::SetManifest, to_manifest(s, index_.job), true),
        "job {} set {}: manifest", jobid_, s.seq);
    return fsutil::install(tmp, set_dir + "/" + kManifestName)
        .context("job {} set {}", jobid_, s.seq);
}

Result<void> JobStore::delete_folder(const std::string& name) const {
    return fsutil::remove_tree(dir_, name).context("job {}", jobid_);
}

Result<void> JobStore::roll_forward_or_fail(SetRecord& s) const {
    auto m = read_manifest(path(s.folder()));
    if (m && m->state() == "committed" && m->seq() == s.seq) {
        auto rec = from_manifest(*m);
        // The manifest is written only after every member file was fsynced, so sizes suffice.
        if (rec && check_set_files(dir_, *rec, false)) {
            log::get("set")->info(
                "job {} set {}: committed by run {} before it ended; rolled forward", jobid_, s.seq,
                s.restart_count);
            s = std::move(*rec);
            return ok();
        }
    }
    s.state = SetState::Failed;
    s.failure = abandoned(s.restart_count);
    return ok();
}

Result<JobStore> JobStore::open_writer(const std::string& root, const JobInfo& job,
                                       uint32_t restart_count, const FolderMover& move_aside) {
    // Root never writes a user's store: the writer is the job's user (docs/security.md).
    if (::geteuid() != job.uid)
        return error_code(EPERM,
                          "job {}: the store of {} (uid {}) is written as that user, not as uid {}",
                          job.jobid, job.user, job.uid, ::geteuid());
    std::error_code ec;
    if (!fs::is_directory(root, ec)) fs::create_directories(root, ec);
    if (ec) return error_code(ec.value(), "job {}: create {}: {}", job.jobid, root, ec.message());
    JobStore st;
    st.root_ = root;
    st.jobid_ = job.jobid;
    st.dir_ = fmt::format("{}/{}", root, job.jobid);
    st.writer_ = true;
    st.restart_count_ = restart_count;
    st.index_.job = job;
    CKPT_TRY(st.set_aside_other_incarnation(move_aside));
    CKPT_TRY_CTX(fsutil::make_private_dir(st.dir_, false), "job {}", job.jobid);
    struct stat sb;
    if (::lstat(st.dir_.c_str(), &sb) != 0) return sys_error("job {}: {}", job.jobid, st.dir_);
    if (sb.st_uid != job.uid)
        return error_code(
            EACCES, "job {}: {} belongs to uid {}, not to the job's user {} (uid {}); not using it",
            job.jobid, st.dir_, sb.st_uid, job.user, job.uid);
    if ((sb.st_mode & 07777) != 0700 && ::chmod(st.dir_.c_str(), 0700) != 0)
        return sys_error("job {}: chmod 0700 {}", job.jobid, st.dir_);

    auto lock = CKPT_TRY_CTX(fsutil::lock_dir(st.dir_), "job {}", job.jobid);
    FolderScan scan = CKPT_TRY_CTX(scan_job_folder(st.dir_), "job {}", job.jobid);
    for (const std::string& name : scan.leftovers)
        if (name.find(".tmp.") != std::string::npos) ::unlink(st.path(name).c_str());

    Index idx;
    if (::access(st.path(kIndexName).c_str(), F_OK) == 0) {
        idx = CKPT_TRY(st.load_locked_index());
    } else if (!scan.sets.empty()) {
        return error_code(
            ENOENT, "job {}: {} is missing but set folders exist; `ckpt-job repair {}` rebuilds it",
            job.jobid, st.path(kIndexName), job.jobid);
    }
    CKPT_TRY(st.check_fence(idx, "claim the job", 0));
    // The saved files are the job's, not the claim's; an unknown incarnation learns this one.
    JobInfo before = idx.job;
    idx.job = job;
    if (idx.job.batch_script.empty()) idx.job.batch_script = before.batch_script;
    if (idx.job.environment.empty()) idx.job.environment = before.environment;
    if (idx.job.saved_files.empty()) idx.job.saved_files = before.saved_files;
    if (idx.job.incarnation.empty()) idx.job.incarnation = before.incarnation;
    idx.restart_count = restart_count;
    for (SetRecord& s : idx.sets)
        // One writer per job: whatever is still "writing" lost its writer, even if of this run.
        if (s.state == SetState::Writing) CKPT_TRY(st.roll_forward_or_fail(s));
    CKPT_TRY(st.replace_index(idx));
    return st;
}

Result<void> JobStore::set_aside_other_incarnation(const FolderMover& move_aside) {
    const std::string& ours = index_.job.incarnation;
    struct stat sb;
    if (ours.empty() || ::access(path(kIndexName).c_str(), F_OK) != 0 ||
        ::stat(dir_.c_str(), &sb) != 0)
        return ok();
    // Another user's folder (whose job had the id) is not ours to read: the job's agent had
    // it moved aside before (docs/security.md).
    if (sb.st_uid != ::geteuid()) return ok();
    auto lock = CKPT_TRY_CTX(fsutil::lock_dir(dir_), "job {}", jobid_);
    auto on_disk = read_index(path(kIndexName));
    // An unreadable index is left to repair, as for any writer; only a readable one that
    // names another incarnation proves the folder is another job's.
    if (!on_disk || on_disk->job.incarnation.empty() || on_disk->job.incarnation == ours)
        return ok();
    std::string aside_name = set_aside_name(jobid_, on_disk->job.incarnation);
    std::string aside = fmt::format("{}/{}", root_, aside_name);
    auto moved = move_aside ? move_aside(std::to_string(jobid_), aside_name)
                            : (::rename(dir_.c_str(), aside.c_str()) == 0
                                   ? Result<void>(ok())
                                   : Result<void>(sys_error("rename")));
    if (!moved)
        return std::move(moved).error().context(
            "job {}: {} holds another job {}'s checkpoints (incarnation {}, this job is {}); "
            "moving it aside to {}",
            jobid_, dir_, jobid_, on_disk->job.incarnation, ours, aside);
    set_aside_ = aside;
    log::get("set")->warn(
        "job {}: {} held the checkpoints of an earlier job {} (incarnation {}; this job is {}: "
        "the job id was reused, e.g. after slurmctld's state was reset); moved aside to {}, "
        "which keeps its {} sets",
        jobid_, dir_, jobid_, on_disk->job.incarnation, ours, aside, on_disk->sets.size());
    return ok();
}

Result<void> JobStore::save_job_file(const std::string& name, const std::string& text) {
    auto lock =
        CKPT_TRY_CTX(fsutil::lock_dir(dir_), "job {}", jobid_);
    Index idx = CKPT_TRY(load_locked_index());
    CKPT_TRY(check_fence(idx, fmt::format("save {}", name), 0));
    CKPT_TRY_CTX(fsutil::write_file_atomic(path(name), text), "job {}", jobid_);
    FileRecord rec = CKPT_TRY_CTX(fsutil::checksum_file(path(name), name), "job {}", jobid_);
    auto& files = idx.job.saved_files;
    std::erase_if(files, [&](const FileRecord& f) { return f.name == name; });
    files.push_back(rec);
    (name == kBatchScriptName ? idx.job.batch_script : idx.job.environment) = name;
    return replace_index(idx);
}

Result<void> JobStore::save_batch_script(const std::string& text) {
    return save_job_file(kBatchScriptName, text);
}

Result<void> JobStore::save_environment(const std::string& text) {
    return save_job_file(kEnvironmentName, text);
}

Result<std::string> JobStore::read_saved_file(const std::string& name) const {
    const auto& files = index_.job.saved_files;
    auto rec = std::find_if(files.begin(), files.end(),
                            [&](const FileRecord& f) { return f.name == name; });
    std::string p = path(name);
    std::string text = CKPT_TRY_CTX(read_file(p), "job {}", jobid_);
    // An index of format 1 recorded no checksums: its batch script is taken as it is.
    if (rec == files.end()) {
        if (index_.format_version < 2) return text;
        return error_code(EINVAL, "job {}: {}: no size and checksum recorded in the index", jobid_,
                          p);
    }
    uint64_t sum = image::checksum(text.data(), text.size());
    if (text.size() != rec->bytes || sum != rec->checksum)
        return error_code(EIO,
                          "job {}: {}: {} bytes, xxh3 {:016x}; the index records {} bytes, xxh3 "
                          "{:016x} (changed or damaged)",
                          jobid_, p, text.size(), sum, rec->bytes, rec->checksum);
    return text;
}

Result<uint64_t> JobStore::begin_set(const SetOptions& opts) {
    if (!writer_) return error_code(EPERM, "job {}: begin a set: store opened read-only", jobid_);
    if (opts.expected_members == 0)
        return error_code(EINVAL, "job {}: begin a set: no members expected", jobid_);
    auto lock =
        CKPT_TRY_CTX(fsutil::lock_dir(dir_), "job {}", jobid_);
    Index idx = CKPT_TRY(load_locked_index());
    CKPT_TRY(check_fence(idx, "begin a set", 0));
    FolderScan scan = CKPT_TRY_CTX(scan_job_folder(dir_), "job {}", jobid_);
    uint64_t seq = std::max(idx.max_seq(), scan.sets.empty() ? 0 : scan.sets.rbegin()->first) + 1;

    SetRecord s;
    s.seq = seq;
    s.state = SetState::Writing;
    s.trigger = opts.trigger;
    s.start_ns = fsutil::now_ns();
    s.step_id = opts.step_id;
    s.step_command = opts.step_command;
    s.node_count = opts.node_count;
    s.expected_members = opts.expected_members;
    s.restart_count = restart_count_;
    if (opts.parent) {
        const SetRecord* p = idx.find(opts.parent);
        if (!p || p->state != SetState::Committed || p->restart_count != restart_count_ ||
            p->step_id != opts.step_id)
            return error_code(EINVAL, "job {}: begin a set after set {}: not a committed set of this run and step",
                              jobid_, opts.parent);
        s.parent = opts.parent;
    }
    // Exclusive: a set folder is never reused, so no writer can overwrite another's set.
    CKPT_TRY_CTX(fsutil::make_private_dir(path(s.folder()), true),
                 "job {} set {}", jobid_, seq);
    CKPT_TRY(write_manifest(s));
    idx.sets.push_back(s);
    CKPT_TRY(replace_index(idx));
    pending_[seq] = s;
    log::get("set")->info("job {} set {}: begun by run {}", jobid_, seq, restart_count_);
    return seq;
}

Result<std::string> JobStore::make_member_dir(uint64_t seq, int32_t member_id) {
    if (!pending_.count(seq))
        return error_code(EINVAL, "job {} set {}: not being written by this writer", jobid_, seq);
    std::string dir = fmt::format("{}/{}/member-{}", dir_, set_folder_name(seq), member_id);
    CKPT_TRY_CTX(fsutil::make_private_dir(dir, false),
                 "job {} set {}", jobid_, seq);
    return dir;
}

Result<void> JobStore::add_member(uint64_t seq, MemberReport report) {
    auto it = pending_.find(seq);
    if (it == pending_.end())
        return error_code(EINVAL, "job {} set {}: not being written by this writer", jobid_, seq);
    SetRecord& s = it->second;
    std::string where = fmt::format("job {} set {} member {}", jobid_, seq, report.member_id);
    std::string rel = report.image_dir;
    if (rel.starts_with(dir_ + "/")) rel = rel.substr(dir_.size() + 1);
    while (!rel.empty() && rel.back() == '/') rel.pop_back();
    if (!rel.starts_with(s.folder() + "/") || !is_plain_relative_path(rel))
        return error_code(EINVAL, "{}: image folder {} is not inside {}", where, report.image_dir,
                          path(s.folder()));
    for (const MemberRecord& m : s.members)
        if (m.member_id == report.member_id) return error_code(EEXIST, "{}: reported twice", where);
    if (s.members.size() >= s.expected_members)
        return error_code(EINVAL, "{}: the set expects only {} members", where, s.expected_members);
    if (report.files.empty())
        return error_code(EINVAL, "{}: {} holds no image files", where, report.image_dir);
    for (const FileRecord& f : report.files)
        if (!is_plain_relative_path(f.name))
            return error_code(EINVAL, "{}: file name '{}' leaves its image folder", where, f.name);
    MemberRecord m;
    m.member_id = report.member_id;
    m.node = std::move(report.node);
    m.image_dir = rel;
    m.files = std::move(report.files);
    for (const FileRecord& f : m.files) m.bytes += f.bytes;
    m.checksum = member_digest(m.files);
    m.dump_ns = fsutil::now_ns();
    m.state = MemberState::Done;
    s.members.push_back(std::move(m));
    return ok();
}

Result<void> JobStore::add_member(uint64_t seq, int32_t member_id, const std::string& node,
                                  const std::string& image_dir) {
    std::string abs = image_dir.starts_with("/") ? image_dir : path(image_dir);
    auto files =
        CKPT_TRY_CTX(scan_member_files(abs), "job {} set {} member {}", jobid_, seq, member_id);
    return add_member(seq, MemberReport{member_id, node, image_dir, std::move(files)});
}

Result<void> JobStore::commit_set(uint64_t seq) {
    auto it = pending_.find(seq);
    if (it == pending_.end())
        return error_code(EINVAL, "job {} set {}: not being written by this writer", jobid_, seq);
    SetRecord s = it->second;
    if (s.members.size() != s.expected_members)
        return error_code(EAGAIN, "job {} set {}: not committed: {} of {} members reported", jobid_,
                          seq, s.members.size(), s.expected_members);
    // A stale run is told so before anything else (its set folder may already be gone).
    {
        auto early = CKPT_TRY_CTX(fsutil::lock_dir(dir_), "job {}", jobid_);
        Index idx = CKPT_TRY(load_locked_index());
        CKPT_TRY(check_fence(idx, "commit", seq));
    }
    // Images first: every member file durable and still the size it was reported with.
    std::set<std::string> dirs{path(s.folder())};
    for (const MemberRecord& m : s.members) {
        for (const FileRecord& f : m.files) {
            std::string p = path(m.image_dir + "/" + f.name);
            auto fd = CKPT_TRY_CTX(open_file(p, O_RDONLY | O_NOFOLLOW | O_NONBLOCK),
                                   "job {} set {} member {}", jobid_, seq, m.member_id);
            struct stat st;
            if (::fstat(fd.get(), &st) != 0)
                return sys_error("job {} set {}: fstat {}", jobid_, seq, p);
            if (static_cast<uint64_t>(st.st_size) != f.bytes)
                return error_code(EIO, "job {} set {} member {}: {} is {} bytes, {} when reported",
                                  jobid_, seq, m.member_id, p, st.st_size, f.bytes);
            if (::fsync(fd.get()) != 0) return sys_error("job {} set {}: fsync {}", jobid_, seq, p);
            for (fs::path d = fs::path(p).parent_path();
                 d.string().size() > path(s.folder()).size(); d = d.parent_path())
                dirs.insert(d.string());
        }
    }
    for (const std::string& d : dirs) CKPT_TRY_CTX(fsutil::fsync_path(d), "job {} set {}", jobid_, seq);

    // Then the manifest and the index, under the lock and only if no newer run took over.
    auto lock =
        CKPT_TRY_CTX(fsutil::lock_dir(dir_), "job {}", jobid_);
    Index idx = CKPT_TRY(load_locked_index());
    CKPT_TRY(check_fence(idx, "commit", seq));
    SetRecord* on_disk = idx.find(seq);
    if (!on_disk || on_disk->state != SetState::Writing || on_disk->restart_count != restart_count_)
        return error_code(
            ESTALE, "job {} set {}: not committed: the index no longer records it as being written",
            jobid_, seq);
    s.state = SetState::Committed;
    s.end_ns = fsutil::now_ns();
    CKPT_TRY(write_manifest(s));
    *on_disk = s;
    CKPT_TRY(replace_index(idx));
    pending_.erase(seq);
    log::get("set")->info("job {} set {}: committed, {} members, {} bytes", jobid_, seq,
                          s.members.size(), s.bytes());
    return ok();
}

Result<void> JobStore::commit_local(uint64_t seq) {
    auto it = pending_.find(seq);
    if (it == pending_.end())
        return error_code(EINVAL, "job {} set {}: not being written by this writer", jobid_, seq);
    SetRecord& s = it->second;
    if (s.members.size() != s.expected_members)
        return error_code(EAGAIN, "job {} set {}: not committed locally: {} of {} members reported",
                          jobid_, seq, s.members.size(), s.expected_members);
    auto lock = CKPT_TRY_CTX(fsutil::lock_dir(dir_), "job {}", jobid_);
    Index idx = CKPT_TRY(load_locked_index());
    CKPT_TRY(check_fence(idx, "commit", seq));
    SetRecord* on_disk = idx.find(seq);
    if (!on_disk || on_disk->state != SetState::Writing || on_disk->restart_count != restart_count_)
        return error_code(
            ESTALE, "job {} set {}: not committed locally: the index no longer records it as being written",
            jobid_, seq);
    SetRecord local = s;
    local.local_complete = true;
    CKPT_TRY(write_manifest(local));
    // The nodes keep only their newest complete local set.
    for (SetRecord& o : idx.sets) o.local_complete = false;
    *on_disk = local;
    CKPT_TRY(replace_index(idx));
    s.local_complete = true;
    log::get("set")->info("job {} set {}: committed at the local level, {} members", jobid_, seq,
                          s.members.size());
    return ok();
}

Result<void> JobStore::fail_set(uint64_t seq, const std::string& reason) {
    auto it = pending_.find(seq);
    if (it == pending_.end())
        return error_code(EINVAL, "job {} set {}: not being written by this writer", jobid_, seq);
    SetRecord s = it->second;
    pending_.erase(it);
    auto lock =
        CKPT_TRY_CTX(fsutil::lock_dir(dir_), "job {}", jobid_);
    Index idx = CKPT_TRY(load_locked_index());
    SetRecord* on_disk = idx.find(seq);
    // Only its own set, and only while it is still "writing": never touches a newer run's.
    if (!on_disk || on_disk->state != SetState::Writing || on_disk->restart_count != restart_count_)
        return ok();
    s.state = SetState::Failed;
    s.end_ns = fsutil::now_ns();
    s.failure = reason;
    CKPT_TRY(write_manifest(s));
    *on_disk = s;
    log::get("set")->info("job {} set {}: failed: {}", jobid_, seq, reason);
    return replace_index(idx);
}

Result<Report> JobStore::keep_newest(uint32_t keep) {
    if (keep == 0) return error_code(EINVAL, "job {}: keep must be at least 1", jobid_);
    auto lock =
        CKPT_TRY_CTX(fsutil::lock_dir(dir_), "job {}", jobid_);
    Index idx = CKPT_TRY(load_locked_index());
    FolderScan scan = CKPT_TRY_CTX(scan_job_folder(dir_), "job {}", jobid_);
    Report report;
    std::vector<std::string> doomed;
    for (const std::string& name : scan.leftovers)
        if (name.starts_with(".deleted-")) doomed.push_back(name);

    const SetRecord* newest = idx.newest_committed();
    if (newest) {
        uint64_t newest_seq = newest->seq;
        uint32_t kept = 0;
        // The parents the kept sets' chains need, and those of sets being written (sets are
        // walked newest first, and a parent is older than its child).
        std::set<uint64_t> needed;
        std::vector<SetRecord> remaining;
        for (auto it = idx.sets.rbegin(); it != idx.sets.rend(); ++it) {
            bool drop = false;
            if (it->state == SetState::Committed)
                drop = ++kept > keep && !needed.count(it->seq);
            else if (it->state == SetState::Failed)
                drop = it->seq < newest_seq;
            if (!drop && it->parent) needed.insert(it->parent);
            if (!drop) {
                remaining.insert(remaining.begin(), *it);
                continue;
            }
            report.lines.push_back(
                fmt::format("set {}: {}, removed", it->seq, to_string(it->state)));
            doomed.push_back(it->folder());
        }
        for (const auto& [seq, name] : scan.sets) {
            if (seq < newest_seq && !idx.find(seq)) {
                report.lines.push_back(
                    fmt::format("set {}: folder not in the index, removed", seq));
                doomed.push_back(name);
            }
        }
        // The index stops naming a set before its folder goes, so it never names a missing one.
        if (remaining.size() != idx.sets.size()) {
            idx.sets = std::move(remaining);
            CKPT_TRY(replace_index(idx));
        }
    }
    for (const std::string& name : doomed) CKPT_TRY(delete_folder(name));
    index_ = idx;
    return report;
}

Result<void> JobStore::remove_set(uint64_t seq) {
    auto lock =
        CKPT_TRY_CTX(fsutil::lock_dir(dir_), "job {}", jobid_);
    Index idx = CKPT_TRY(load_locked_index());
    const SetRecord* s = idx.find(seq);
    if (!s) return error_code(ENOENT, "job {}: no set {}", jobid_, seq);
    if (s->state == SetState::Writing)
        return error_code(EBUSY, "job {} set {}: being written (state writing); not removed",
                          jobid_, seq);
    for (const SetRecord& child : idx.sets)
        if (child.parent == seq)
            return error_code(EBUSY, "job {} set {}: set {} is incremental on it (its pages are read from it); "
                                     "remove set {} first",
                              jobid_, seq, child.seq, child.seq);
    std::string folder = s->folder();
    std::erase_if(idx.sets, [&](const SetRecord& r) { return r.seq == seq; });
    CKPT_TRY(replace_index(idx));
    return delete_folder(folder);
}

Result<void> JobStore::remove_job() {
    // The index goes first: a crash halfway leaves set folders that repair can still read.
    if (::unlink(path(kIndexName).c_str()) != 0 && errno != ENOENT)
        return sys_error("job {}: unlink {}", jobid_, path(kIndexName));
    std::error_code ec;
    for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
        std::string name = it->path().filename().string();
        if (it->is_directory()) {
            CKPT_TRY(delete_folder(name));
        } else if (::unlink(it->path().c_str()) != 0) {
            return sys_error("job {}: unlink {}", jobid_, it->path().string());
        }
    }
    if (ec) return error_code(ec.value(), "job {}: list {}: {}", jobid_, dir_, ec.message());
    if (::rmdir(dir_.c_str()) != 0) {
        // The checkpoint root may not let users remove folders; an empty one is harmless.
        if (errno != EACCES && errno != EPERM) return sys_error("job {}: rmdir {}", jobid_, dir_);
        log::get("set")->info("job {}: {} is empty but cannot be removed: {}", jobid_, dir_,
                              strerror(errno));
    }
    return ok();
}

Result<void> JobStore::verify_set(uint64_t seq) const {
    const SetRecord* s = index_.find(seq);
    if (!s) return error_code(ENOENT, "job {}: no set {}", jobid_, seq);
    std::string where = fmt::format("job {} set {}", jobid_, seq);
    if (s->state != SetState::Committed)
        return error_code(EINVAL, "{}: state {}{}{}: not a usable checkpoint", where,
                          to_string(s->state), s->failure.empty() ? "" : ": ", s->failure);
    auto m = read_manifest(path(s->folder()));
    if (!m) return error_code(m.error().code(), "{}: manifest: {}", where, m.error().message());
    auto from_disk = from_manifest(*m);
    if (!from_disk)
        return error_code(EINVAL, "{}: manifest: {}", where, from_disk.error().message());
    bool agree =
        from_disk->state == SetState::Committed && from_disk->members.size() == s->members.size();
    for (size_t i = 0; agree && i < s->members.size(); ++i)
        agree = from_disk->members[i].checksum == s->members[i].checksum &&
                from_disk->members[i].image_dir == s->members[i].image_dir;
    if (!agree || from_disk->parent != s->parent)
        return error_code(EINVAL, "{}: manifest disagrees with the index", where);
    CKPT_TRY_CTX(check_set_files(dir_, *s, true), "{}", where);
    if (!s->parent) return ok();
    // An incremental set: its parent set must be there and right, and so on down the chain
    // (each parent is older, so the walk ends).
    const SetRecord* p = index_.find(s->parent);
    if (!p) return error_code(ENOENT, "{}: its parent set {} is missing", where, s->parent);
    for (const MemberRecord& m : s->members) {
        auto pm = std::find_if(p->members.begin(), p->members.end(),
                               [&](const MemberRecord& r) { return r.member_id == m.member_id; });
        if (pm == p->members.end())
            return error_code(ENOENT, "{}: member {}: not in its parent set {}", where, m.member_id, s->parent);
        CKPT_TRY_CTX(check_member_parent(dir_, m, *pm), "{}", where);
    }
    return verify_set(s->parent).context("{}: parent set {}", where, s->parent);
}

Result<uint64_t> JobStore::newest_verified() const {
    std::string why;
    for (auto it = index_.sets.rbegin(); it != index_.sets.rend(); ++it) {
        if (it->state != SetState::Committed) continue;
        auto v = verify_set(it->seq);
        if (v) return it->seq;
        log::get("set")->warn("{}", v.error().message());
        why += "; " + v.error().message();
    }
    if (why.empty()) return error_code(ENOENT, "job {}: no committed set", jobid_);
    return error_code(EIO, "job {}: no committed set verifies{}", jobid_, why);
}

Result<Report> JobStore::repair() {
    auto lock =
        CKPT_TRY_CTX(fsutil::lock_dir(dir_), "job {}", jobid_);
    Report report;
    auto old = read_index(path(kIndexName));
    if (!old)
        report.lines.push_back(
            fmt::format("index unreadable ({}): rebuilt", old.error().message()));
    FolderScan scan = CKPT_TRY_CTX(scan_job_folder(dir_), "job {}", jobid_);
    for (const std::string& name : scan.leftovers) {
        if (name.starts_with(".deleted-"))
            CKPT_TRY(delete_folder(name));
        else
            ::unlink(path(name).c_str());
    }

    Index idx;
    idx.job = old ? old->job : index_.job;
    idx.restart_count = old ? old->restart_count : 0;
    bool job_known = old.ok();
    for (const auto& [seq, name] : scan.sets) {
        SetRecord s;
        s.seq = seq;
        s.state = SetState::Failed;
        auto m = read_manifest(path(name));
        auto rec = m ? from_manifest(*m) : Result<SetRecord>(m.error());
        if (!rec) {
            s.failure = fmt::format("manifest unreadable: {}", rec.error().message());
        } else if (rec->seq != seq) {
            s.failure = fmt::format("manifest names set {}", rec->seq);
        } else {
            s = std::move(*rec);
            if (!job_known && m->job().jobid() == jobid_) idx.job = job_from_manifest(*m);
        }
        idx.restart_count = std::max(idx.restart_count, s.restart_count);
        idx.sets.push_back(std::move(s));
    }
    for (SetRecord& s : idx.sets) {
        if (s.state == SetState::Writing && s.restart_count < idx.restart_count) {
            s.state = SetState::Failed;
            s.failure = abandoned(s.restart_count);
        }
        if (s.state != SetState::Committed) continue;
        // A set begun by an older run after a newer run had begun one is a stale copy's.
        for (const SetRecord& t : idx.sets) {
            if (t.seq < s.seq && t.restart_count > s.restart_count) {
                s.state = SetState::Failed;
                s.failure = fmt::format("fenced: run {} wrote it after run {} began set {}",
                                        s.restart_count, t.restart_count, t.seq);
                break;
            }
        }
        if (s.state != SetState::Committed) continue;
        if (auto v = check_set_files(dir_, s, true); !v) {
            s.state = SetState::Failed;
            s.failure = fmt::format("repair: {}", v.error().message());
        }
    }
    // Only the newest complete local set keeps its local copies (commit_local).
    bool newer_local = false;
    for (auto it = idx.sets.rbegin(); it != idx.sets.rend(); ++it) {
        if (newer_local) it->local_complete = false;
        newer_local = newer_local || it->local_complete;
    }
    for (const SetRecord& s : idx.sets) {
        const SetRecord* before = old ? old->find(s.seq) : nullptr;
        std::string now =
            fmt::format("{}{}{}", to_string(s.state), s.failure.empty() ? "" : ": ", s.failure);
        if (!before)
            report.lines.push_back(fmt::format("set {}: {} (not in the old index)", s.seq, now));
        else if (before->state != s.state)
            report.lines.push_back(
                fmt::format("set {}: was {}, now {}", s.seq, to_string(before->state), now));
    }
    if (old)
        for (const SetRecord& s : old->sets)
            if (!idx.find(s.seq))
                report.lines.push_back(fmt::format("set {}: folder missing, dropped", s.seq));
    CKPT_TRY(replace_index(idx));
    return report;
}

}  // namespace ckpt::set
