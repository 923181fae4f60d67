// The set layer on real files and real HDF5: schema, commit, retention, verify, repair,
// fencing and corruption.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "ckpt/image/image_file.h"
#include "ckpt/set/index_h5.h"
#include "set_manifest.pb.h"
#include "set_test_util.h"

using namespace ckpt;
using namespace ckpt::set;
using namespace ckpt::set::testing;

namespace {

void overwrite(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

class Store : public ::testing::Test {
protected:
    JobStore writer(uint32_t run = 0) {
        auto st = JobStore::open_writer(root_.path(), sample_job(kJob), run);
        EXPECT_TRUE(st.ok()) << st.error().message();
        return std::move(*st);
    }
    JobStore reader() {
        auto st = JobStore::open(root_.path(), kJob);
        EXPECT_TRUE(st.ok()) << st.error().message();
        return std::move(*st);
    }
    std::vector<uint64_t> seqs_on_disk() {
        std::vector<uint64_t> seqs;
        JobStore r = reader();
        for (const SetRecord& s : r.index().sets) seqs.push_back(s.seq);
        return seqs;
    }
    std::string job_dir() const { return root_.path() + "/" + std::to_string(kJob); }
    std::string index_path() const { return job_dir() + "/index.h5"; }
    std::string member_file(uint64_t seq, int member, const std::string& name) const {
        return fmt::format("{}/{}/member-{}/{}", job_dir(), set_folder_name(seq), member, name);
    }

    static constexpr uint64_t kJob = 4242;
    TempRoot root_;
};

TEST(Model, NamesRoundTrip) {
    for (auto t : {Trigger::Interval, Trigger::Manual, Trigger::Preempt, Trigger::TimeLimit})
        EXPECT_EQ(*parse_trigger(to_string(t)), t);
    for (auto s : {SetState::Writing, SetState::Committed, SetState::Failed})
        EXPECT_EQ(*parse_set_state(to_string(s)), s);
    EXPECT_FALSE(parse_trigger("sometimes").ok());
    EXPECT_EQ(set_folder_name(42), "set-000042");
    EXPECT_EQ(parse_set_folder_name("set-000042"), 42u);
    EXPECT_FALSE(parse_set_folder_name("set-000042.tmp.1").has_value());
    EXPECT_FALSE(parse_set_folder_name(".deleted-set-000042").has_value());
}

TEST(Model, MemberDigestDependsOnEveryField) {
    std::vector<FileRecord> a = {{"core.img", 10, 1}, {"mm.img", 20, 2}};
    std::vector<FileRecord> reordered = {a[1], a[0]};
    EXPECT_EQ(member_digest(a), member_digest(reordered));
    auto b = a;
    b[0].bytes = 11;
    EXPECT_NE(member_digest(a), member_digest(b));
    b = a;
    b[1].checksum = 3;
    EXPECT_NE(member_digest(a), member_digest(b));
    b = a;
    b[1].name = "mm2.img";
    EXPECT_NE(member_digest(a), member_digest(b));
}

TEST_F(Store, ScanChecksumsMatchImageChecksum) {
    std::string dir = root_.path() + "/m";
    ::mkdir(dir.c_str(), 0700);
    write_member_images(dir, 7, 3 << 20);  // larger than one read chunk
    auto files = scan_member_files(dir);
    ASSERT_TRUE(files.ok()) << files.error().message();
    ASSERT_EQ(files->size(), 3u);
    EXPECT_EQ((*files)[2].name, "pages/pages-1.img");
    for (const FileRecord& f : *files) {
        auto data = read_file(dir + "/" + f.name);
        ASSERT_TRUE(data.ok());
        EXPECT_EQ(f.bytes, data->size());
        EXPECT_EQ(f.checksum, image::checksum(data->data(), data->size())) << f.name;
    }
    ::symlink("/etc/passwd", (dir + "/link").c_str());
    auto bad = scan_member_files(dir);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message().find("not a regular file"), std::string::npos)
        << bad.error().message();
}

TEST_F(Store, IndexRoundTripsEveryField) {
    Index idx;
    idx.job = sample_job(kJob);
    idx.job.batch_script = "job-script";
    idx.job.environment = "job-environment";
    idx.job.incarnation = "5d41402abc4b2a76b9719d911017c592";
    idx.job.saved_files = {{"job-script", 12, 0x1234}, {"job-environment", 40, 0xfedcba9876543210}};
    idx.restart_count = 3;
    SetRecord s;
    s.seq = 7;
    s.state = SetState::Committed;
    s.trigger = Trigger::TimeLimit;
    s.start_ns = 1700000000123456789ull;
    s.end_ns = 1700000001123456789ull;
    s.step_id = 4294967291u;
    s.node_count = 2;
    s.expected_members = 2;
    s.restart_count = 3;
    for (int i = 0; i < 2; ++i) {
        MemberRecord m;
        m.member_id = i;
        m.node = fmt::format("node{}", i);
        m.image_dir = fmt::format("set-000007/member-{}", i);
        m.files = {{"core.img", 100u + i, 0xabcull + i},
                   {"pages/p.img", 4096, 0xfffffffffffffff0ull}};
        m.bytes = 4196u + i;
        m.checksum = member_digest(m.files);
        m.dump_ns = 1700000000999ull;
        m.state = MemberState::Done;
        s.members.push_back(m);
    }
    idx.sets.push_back(s);
    SetRecord failed;
    failed.seq = 8;
    failed.state = SetState::Failed;
    failed.failure = "node2 died";
    failed.expected_members = 4;
    idx.sets.push_back(failed);

    std::string path = root_.path() + "/roundtrip.h5";
    ASSERT_TRUE(write_index_file(path, idx).ok());
    auto back = read_index(path);
    ASSERT_TRUE(back.ok()) << back.error().message();
    EXPECT_EQ(back->job.jobid, kJob);
    EXPECT_EQ(back->job.name, "lattice-qcd");
    EXPECT_EQ(back->job.submit_options, idx.job.submit_options);
    EXPECT_EQ(back->job.batch_script, "job-script");
    EXPECT_EQ(back->job.environment, "job-environment");
    EXPECT_EQ(back->job.incarnation, idx.job.incarnation);
    ASSERT_EQ(back->job.saved_files.size(), 2u);
    EXPECT_EQ(back->job.saved_files[1].name, "job-environment");
    EXPECT_EQ(back->job.saved_files[1].bytes, 40u);
    EXPECT_EQ(back->job.saved_files[1].checksum, 0xfedcba9876543210ull);
    EXPECT_EQ(back->format_version, kIndexFormatVersion);
    EXPECT_EQ(back->restart_count, 3u);
    ASSERT_EQ(back->sets.size(), 2u);
    const SetRecord& r = back->sets[0];
    EXPECT_EQ(r.seq, 7u);
    EXPECT_EQ(r.state, SetState::Committed);
    EXPECT_EQ(r.trigger, Trigger::TimeLimit);
    EXPECT_EQ(r.start_ns, s.start_ns);
    EXPECT_EQ(r.end_ns, s.end_ns);
    EXPECT_EQ(r.step_id, 4294967291u);
    EXPECT_EQ(r.bytes(), s.bytes());
    ASSERT_EQ(r.members.size(), 2u);
    EXPECT_EQ(r.members[1].node, "node1");
    EXPECT_EQ(r.members[1].checksum, s.members[1].checksum);
    ASSERT_EQ(r.members[1].files.size(), 2u);
    EXPECT_EQ(r.members[1].files[1].checksum, 0xfffffffffffffff0ull);
    EXPECT_EQ(back->sets[1].failure, "node2 died");
    EXPECT_TRUE(back->sets[1].members.empty());
    // An existing file is never written over: the caller renames a fresh one into place.
    EXPECT_FALSE(write_index_file(path, idx).ok());
}

TEST_F(Store, CommitRecordsEverythingAndOwnsTheFolder) {
    JobStore st = writer();
    ASSERT_TRUE(st.save_batch_script("#!/bin/sh\nsrun ./app\n").ok());
    uint64_t seq = write_committed_set(st, 3);
    EXPECT_EQ(seq, 1u);

    struct stat sb;
    ASSERT_EQ(::stat(job_dir().c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 07777, 0700u);
    EXPECT_EQ(sb.st_uid, ::geteuid());
    EXPECT_EQ(*read_file(job_dir() + "/job-script"), "#!/bin/sh\nsrun ./app\n");

    JobStore r = reader();
    const Index& idx = r.index();
    EXPECT_EQ(idx.job.batch_script, "job-script");
    ASSERT_EQ(idx.sets.size(), 1u);
    const SetRecord& s = idx.sets[0];
    EXPECT_EQ(s.state, SetState::Committed);
    EXPECT_EQ(s.members.size(), 3u);
    EXPECT_GE(s.end_ns, s.start_ns);
    uint64_t on_disk = 0;
    for (const MemberRecord& m : s.members)
        for (const FileRecord& f : m.files)
            on_disk +=
                static_cast<uint64_t>(file_size(job_dir() + "/" + m.image_dir + "/" + f.name));
    EXPECT_EQ(s.bytes(), on_disk);
    EXPECT_TRUE(r.verify_set(seq).ok());
    EXPECT_EQ(*r.newest_verified(), seq);
    // The manifest says the same.
    image::SetManifest m;
    ASSERT_TRUE(
        image::read_image(job_dir() + "/set-000001/manifest", image::Kind::SetManifest, &m).ok());
    EXPECT_EQ(m.state(), "committed");
    EXPECT_EQ(m.members_size(), 3);
    EXPECT_EQ(m.job().name(), "lattice-qcd");
}

// An index written by an earlier build (format 1: no environment, incarnation or saved-file
// checksums) still reads; the next writer rewrites it in the current format.
TEST_F(Store, AFormatOneIndexStillReads) {
    {
        JobStore st = writer();
        ASSERT_TRUE(st.save_batch_script("#!/bin/sh\necho old\n").ok());
        write_committed_set(st, 1);
    }
    Index old = reader().index();
    std::string v1 = job_dir() + "/v1.h5";
    ASSERT_TRUE(write_index_file(v1, old, 1).ok());
    ASSERT_EQ(::rename(v1.c_str(), index_path().c_str()), 0);
    JobStore r = reader();
    EXPECT_EQ(r.index().format_version, 1u);
    EXPECT_TRUE(r.index().job.saved_files.empty());
    EXPECT_TRUE(r.index().job.incarnation.empty());
    auto script = r.read_saved_file(kBatchScriptName);
    ASSERT_TRUE(script.ok()) << script.error().message();
    EXPECT_EQ(*script, "#!/bin/sh\necho old\n");
    EXPECT_EQ(*r.newest_verified(), 1u);
    JobStore w = writer();
    EXPECT_EQ(reader().index().format_version, kIndexFormatVersion);
    EXPECT_FALSE(write_index_file(job_dir() + "/v0.h5", old, 0).ok());
}

// The job's environment is saved like the batch script: the user's, 0600, and checked
// against its recorded size and checksum when read back.
TEST_F(Store, SavedFilesAreChecksummed) {
    std::string env("HOME=/home/alice\0WEIRD=a b\nc=d\0", 32);
    {
        JobStore st = writer();
        ASSERT_TRUE(st.save_batch_script("#!/bin/sh\n").ok());
        ASSERT_TRUE(st.save_environment(env).ok());
        write_committed_set(st, 1);
    }
    struct stat sb;
    ASSERT_EQ(::stat((job_dir() + "/job-environment").c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 07777, 0600u);
    EXPECT_EQ(sb.st_uid, ::geteuid());
    JobStore r = reader();
    EXPECT_EQ(r.index().job.environment, "job-environment");
    ASSERT_EQ(r.index().job.saved_files.size(), 2u);
    auto back = r.read_saved_file(kEnvironmentName);
    ASSERT_TRUE(back.ok()) << back.error().message();
    EXPECT_EQ(*back, env);
    // A later claim (a requeued run) keeps what was saved.
    { JobStore again = writer(1); }
    EXPECT_EQ(*reader().read_saved_file(kEnvironmentName), env);
    // Every changed byte is refused, with the file named.
    std::string changed = env;
    changed[6] = 'X';
    overwrite(job_dir() + "/job-environment", changed);
    auto bad = reader().read_saved_file(kEnvironmentName);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message().find("job-environment"), std::string::npos);
    EXPECT_NE(bad.error().message().find("changed or damaged"), std::string::npos);
    overwrite(job_dir() + "/job-environment", env.substr(0, 10));
    EXPECT_FALSE(reader().read_saved_file(kEnvironmentName).ok());
    EXPECT_FALSE(reader().read_saved_file("no-such-file").ok());
}

// A job id reused by a new job (another incarnation): the old folder is moved aside whole,
// the new job starts its own; the same incarnation (a requeue) or an unknown one keeps it.
TEST_F(Store, AnotherIncarnationMovesTheOldFolderAside) {
    JobInfo first = sample_job(kJob), second = first;
    first.incarnation = "aaaa";
    second.incarnation = "bbbb";
    {
        auto st = JobStore::open_writer(root_.path(), first, 0);
        ASSERT_TRUE(st.ok()) << st.error().message();
        ASSERT_TRUE(st->save_batch_script("#!/bin/sh\n").ok());
        write_committed_set(*st, 1);
        EXPECT_EQ(st->set_aside(), "");
    }
    for (JobInfo same : {first, sample_job(kJob)}) {
        auto st = JobStore::open_writer(root_.path(), same, 1);
        ASSERT_TRUE(st.ok()) << st.error().message();
        EXPECT_EQ(st->set_aside(), "");
        EXPECT_EQ(reader().index().sets.size(), 1u);
        EXPECT_EQ(reader().index().job.incarnation, "aaaa");
    }
    auto st = JobStore::open_writer(root_.path(), second, 0);
    ASSERT_TRUE(st.ok()) << st.error().message();
    std::string aside = fmt::format("{}/{}.earlier-aaaa", root_.path(), kJob);
    EXPECT_EQ(st->set_aside(), aside);
    JobStore now = reader();
    EXPECT_TRUE(now.index().sets.empty());
    EXPECT_EQ(now.index().job.incarnation, "bbbb");
    EXPECT_EQ(now.index().job.batch_script, "");
    EXPECT_EQ(now.index().restart_count, 0u);
    // The earlier job's sets are all there, and still verify.
    auto idx = read_index(aside + "/index.h5");
    ASSERT_TRUE(idx.ok()) << idx.error().message();
    EXPECT_EQ(idx->job.incarnation, "aaaa");
    ASSERT_EQ(idx->sets.size(), 1u);
    EXPECT_TRUE(std::filesystem::exists(aside + "/job-script"));
    EXPECT_TRUE(std::filesystem::exists(aside + "/set-000001/member-0"));

    // An incarnation is the job's environment's, so the user's to choose: only a plain word
    // becomes part of the name.
    JobInfo odd = second, next = second;
    odd.incarnation = "../../x";
    next.incarnation = "cccc";
    ASSERT_TRUE(JobStore::open_writer(root_.path(), odd, 0).ok());
    auto third = JobStore::open_writer(root_.path(), next, 0);
    ASSERT_TRUE(third.ok()) << third.error().message();
    EXPECT_EQ(std::filesystem::path(third->set_aside()).parent_path(), root_.path());
    std::string name = std::filesystem::path(third->set_aside()).filename().string();
    std::string prefix = fmt::format("{}.earlier-", kJob);
    ASSERT_TRUE(name.starts_with(prefix)) << name;
    EXPECT_EQ(name.size(), prefix.size() + 16) << name;
    EXPECT_EQ(name.find_first_not_of("0123456789abcdef", prefix.size()), std::string::npos) << name;
    EXPECT_TRUE(std::filesystem::is_directory(third->set_aside()));
}

TEST_F(Store, CommitWaitsForEveryMember) {
    JobStore st = writer();
    auto seq = st.begin_set({Trigger::Manual, 0, 2, 2, {}});
    ASSERT_TRUE(seq.ok());
    auto dir = st.make_member_dir(*seq, 0);
    write_member_images(*dir, 1);
    ASSERT_TRUE(st.add_member(*seq, 0, "node1", *dir).ok());
    auto c = st.commit_set(*seq);
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.error().message().find("1 of 2 members"), std::string::npos) << c.error().message();
    EXPECT_EQ(reader().index().sets[0].state, SetState::Writing);
    // Reporting the same member twice, or a folder outside the set, is refused.
    EXPECT_FALSE(st.add_member(*seq, 0, "node1", *dir).ok());
    std::string outside = root_.path() + "/elsewhere";
    ::mkdir(outside.c_str(), 0700);
    write_member_images(outside, 2);
    auto o = st.add_member(*seq, 1, "node2", outside);
    ASSERT_FALSE(o.ok());
    EXPECT_NE(o.error().message().find("not inside"), std::string::npos) << o.error().message();
    ASSERT_TRUE(st.fail_set(*seq, "node2 did not report").ok());
    JobStore r = reader();
    EXPECT_EQ(r.index().sets[0].state, SetState::Failed);
    EXPECT_EQ(r.index().sets[0].failure, "node2 did not report");
    EXPECT_EQ(r.index().newest_committed(), nullptr);
}

TEST_F(Store, CommitRefusesAnImageChangedAfterItsReport) {
    JobStore st = writer();
    auto seq = st.begin_set({Trigger::Manual, 0, 1, 1, {}});
    auto dir = st.make_member_dir(*seq, 0);
    write_member_images(*dir, 1);
    ASSERT_TRUE(st.add_member(*seq, 0, "node1", *dir).ok());
    ASSERT_EQ(::truncate((*dir + "/core-1.img").c_str(), 10), 0);
    auto c = st.commit_set(*seq);
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.error().message().find("core-1.img is 10 bytes"), std::string::npos)
        << c.error().message();
}

TEST_F(Store, RetentionKeepsNewestCommittedAndDropsOlderFailures) {
    JobStore st = writer();
    for (uint32_t i = 1; i <= 4; ++i) write_committed_set(st, 2, i);  // sets 1..4
    auto failed = st.begin_set({Trigger::Manual, 0, 1, 1, {}});           // 5: failed, newer than all
    ASSERT_TRUE(st.fail_set(*failed, "test").ok());
    auto writing = st.begin_set({Trigger::Manual, 0, 1, 1, {}});  // 6: being written
    ASSERT_TRUE(writing.ok());

    auto r = st.keep_newest(2);
    ASSERT_TRUE(r.ok()) << r.error().message();
    std::vector<uint64_t> seqs = seqs_on_disk();
    // The failed set 5 is newer than the newest committed (4), so it stays for inspection;
    // the set being written is never touched.
    EXPECT_EQ(seqs, (std::vector<uint64_t>{3, 4, 5, 6}));
    EXPECT_FALSE(std::filesystem::exists(job_dir() + "/set-000001"));
    EXPECT_FALSE(std::filesystem::exists(job_dir() + "/set-000002"));
    EXPECT_TRUE(std::filesystem::exists(job_dir() + "/set-000003/manifest"));

    // Once a newer set commits, the failed one and the oldest committed go.
    auto dir = st.make_member_dir(*writing, 0);
    write_member_images(*dir, 9);
    ASSERT_TRUE(st.add_member(*writing, 0, "node1", *dir).ok());
    ASSERT_TRUE(st.commit_set(*writing).ok());
    ASSERT_TRUE(st.keep_newest(2).ok());
    seqs = seqs_on_disk();
    EXPECT_EQ(seqs, (std::vector<uint64_t>{4, 6}));
    EXPECT_FALSE(st.keep_newest(0).ok());
}

// Incremental sets (format 5): retention keeps every set a kept set's chain needs and frees
// the others; the parent survives repair; a needed parent cannot be removed; begin_set
// refuses a parent that is not a committed set of this run.
TEST_F(Store, RetentionKeepsTheChainsOfKeptSets) {
    JobStore st = writer();
    uint64_t s1 = write_committed_set(st, 1, 1);
    uint64_t s2 = write_committed_set(st, 1, 2, s1);
    uint64_t s3 = write_committed_set(st, 1, 3, s2);
    ASSERT_TRUE(st.keep_newest(1).ok());
    EXPECT_EQ(seqs_on_disk(), (std::vector<uint64_t>{1, 2, 3}));  // 3 needs 2, which needs 1
    EXPECT_EQ(reader().index().find(s3)->parent, s2);
    EXPECT_EQ(reader().index().format_version, kIndexFormatVersion);

    auto refused = reader().remove_set(s2);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.error().message().find("set 3 is incremental on it"), std::string::npos)
        << refused.error().message();

    uint64_t s4 = write_committed_set(st, 1, 4);  // full
    ASSERT_TRUE(st.keep_newest(2).ok());          // 4 and 3 kept, 3's chain too
    EXPECT_EQ(seqs_on_disk(), (std::vector<uint64_t>{1, 2, 3, 4}));
    uint64_t s5 = write_committed_set(st, 1, 5, s4);
    auto writing = st.begin_set({Trigger::Interval, 0, 2, 1, {}, s5});  // a set being written on 5
    ASSERT_TRUE(writing.ok()) << writing.error().message();
    ASSERT_TRUE(st.keep_newest(1).ok());  // 5 kept, 4 needed by it; 1-3 freed
    EXPECT_EQ(seqs_on_disk(), (std::vector<uint64_t>{4, 5, *writing}));
    for (const char* gone : {"/set-000001", "/set-000002", "/set-000003"})
        EXPECT_FALSE(std::filesystem::exists(job_dir() + gone)) << gone;
    EXPECT_TRUE(std::filesystem::exists(job_dir() + "/set-000004/member-0/core-1.img"));

    // The parent is in the manifests too: repair keeps it.
    ASSERT_TRUE(std::filesystem::remove(index_path()));
    auto fixed = JobStore::open_folder(root_.path(), kJob);
    ASSERT_TRUE(fixed.ok());
    ASSERT_TRUE(fixed->repair().ok());
    EXPECT_EQ(reader().index().find(s5)->parent, s4);
    EXPECT_EQ(reader().index().find(s4)->parent, 0u);

    // A parent must be a committed set of this run and step.
    EXPECT_FALSE(writer(0).begin_set({Trigger::Interval, 0, 2, 1, {}, 1}).ok());        // gone
    EXPECT_FALSE(writer(0).begin_set({Trigger::Interval, 0, 2, 1, {}, *writing}).ok());  // not committed
    EXPECT_FALSE(writer(0).begin_set({Trigger::Interval, 7, 2, 1, {}, s5}).ok());        // another step
    EXPECT_FALSE(writer(1).begin_set({Trigger::Interval, 0, 2, 1, {}, s5}).ok());        // another run
}

// Verify follows an incremental set's chain: a parent set damaged or missing fails the
// child, naming the parent.
TEST_F(Store, VerifyChecksTheChainOfParents) {
    JobStore st = writer();
    uint64_t s1 = write_committed_set(st, 2, 1);
    uint64_t s2 = write_committed_set(st, 2, 2, s1);
    ASSERT_TRUE(reader().verify_set(s2).ok());
    flip_byte(member_file(s1, 1, "core-1.img"), 10);
    auto v = reader().verify_set(s2);
    ASSERT_FALSE(v.ok());
    EXPECT_NE(v.error().message().find("parent set 1"), std::string::npos) << v.error().message();
    EXPECT_NE(v.error().message().find("checksum mismatch"), std::string::npos) << v.error().message();
    auto newest = reader().newest_verified();
    EXPECT_FALSE(newest.ok());  // neither 2 (its parent) nor 1
}

TEST_F(Store, RetentionWithoutACommittedSetDeletesNothing) {
    JobStore st = writer();
    auto a = st.begin_set({Trigger::Manual, 0, 1, 1, {}});
    ASSERT_TRUE(st.fail_set(*a, "x").ok());
    ASSERT_TRUE(st.keep_newest(1).ok());
    EXPECT_EQ(reader().index().sets.size(), 1u);
    EXPECT_TRUE(std::filesystem::exists(job_dir() + "/set-000001"));
}

TEST_F(Store, RemoveSetAndJob) {
    JobStore st = writer();
    write_committed_set(st, 1, 1);
    write_committed_set(st, 1, 2);
    auto busy = st.begin_set({Trigger::Manual, 0, 1, 1, {}});
    JobStore r = reader();
    auto refused = r.remove_set(*busy);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.error().message().find("being written"), std::string::npos);
    ASSERT_TRUE(r.remove_set(1).ok());
    EXPECT_FALSE(std::filesystem::exists(job_dir() + "/set-000001"));
    EXPECT_EQ(reader().index().sets.size(), 2u);
    EXPECT_FALSE(r.remove_set(1).ok());
    ASSERT_TRUE(r.remove_job().ok());
    EXPECT_FALSE(std::filesystem::exists(job_dir()));
}

TEST_F(Store, VerifyNamesTheTruncatedFile) {
    JobStore st = writer();
    uint64_t seq = write_committed_set(st, 2);
    std::string victim = member_file(seq, 1, "pages/pages-1.img");
    ASSERT_EQ(::truncate(victim.c_str(), 100), 0);
    auto v = reader().verify_set(seq);
    ASSERT_FALSE(v.ok());
    EXPECT_NE(v.error().message().find(fmt::format("job {} set {}", kJob, seq)), std::string::npos);
    EXPECT_NE(v.error().message().find(victim), std::string::npos) << v.error().message();
    EXPECT_NE(v.error().message().find("100 bytes, expected 12288"), std::string::npos)
        << v.error().message();
}

TEST_F(Store, VerifyFindsAFlippedByteAndRecoveryFallsBack) {
    JobStore st = writer();
    uint64_t first = write_committed_set(st, 2, 1);
    uint64_t second = write_committed_set(st, 2, 2);
    std::string victim = member_file(second, 0, "core-1.img");
    flip_byte(victim, 1000);
    JobStore r = reader();
    auto v = r.verify_set(second);
    ASSERT_FALSE(v.ok());
    EXPECT_NE(v.error().message().find("checksum mismatch"), std::string::npos)
        << v.error().message();
    EXPECT_NE(v.error().message().find(victim), std::string::npos);
    EXPECT_TRUE(r.verify_set(first).ok());
    EXPECT_EQ(*r.newest_verified(), first);
    // Repair marks the damaged set failed, so the current set is the good one.
    ASSERT_TRUE(r.repair().ok());
    JobStore after = reader();
    EXPECT_EQ(after.index().find(second)->state, SetState::Failed);
    EXPECT_NE(after.index().find(second)->failure.find("checksum mismatch"), std::string::npos);
    EXPECT_EQ(after.index().newest_committed()->seq, first);
}

TEST_F(Store, VerifyRefusesSetsThatAreNotCommitted) {
    JobStore st = writer();
    auto seq = st.begin_set({Trigger::Manual, 0, 1, 1, {}});
    auto v = reader().verify_set(*seq);
    ASSERT_FALSE(v.ok());
    EXPECT_NE(v.error().message().find("state writing"), std::string::npos);
    EXPECT_FALSE(reader().verify_set(99).ok());
    EXPECT_EQ(reader().newest_verified().error().code(), ENOENT);
}

TEST_F(Store, GarbageOrTruncatedIndexIsAClearErrorAndRepairRebuildsIt) {
    JobStore st = writer(2);
    ASSERT_TRUE(st.save_batch_script("#!/bin/sh\n").ok());
    write_committed_set(st, 2, 1);
    write_committed_set(st, 2, 2);
    auto failed = st.begin_set({Trigger::Preempt, 0, 1, 1, {}});
    ASSERT_TRUE(st.fail_set(*failed, "preempted").ok());
    Index before = reader().index();

    for (int damage = 0; damage < 3; ++damage) {
        if (damage == 0) {
            ASSERT_EQ(::truncate(index_path().c_str(), file_size(index_path()) / 2), 0);
        } else if (damage == 1) {
            std::string junk(5000, 'x');
            int fd = ::open(index_path().c_str(), O_WRONLY | O_TRUNC);
            ASSERT_EQ(::write(fd, junk.data(), junk.size()), 5000);
            ::close(fd);
        } else {
            ASSERT_EQ(::unlink(index_path().c_str()), 0);
        }
        auto bad = JobStore::open(root_.path(), kJob);
        ASSERT_FALSE(bad.ok()) << "damage " << damage;
        const std::string& msg = bad.error().message();
        EXPECT_NE(msg.find(fmt::format("job {}", kJob)), std::string::npos) << msg;
        EXPECT_NE(msg.find("index.h5"), std::string::npos) << msg;
        EXPECT_NE(msg.find("ckpt-job repair"), std::string::npos) << msg;
        // A writer refuses too, rather than start over and hide the old sets.
        EXPECT_FALSE(JobStore::open_writer(root_.path(), sample_job(kJob), 2).ok());

        auto folder = JobStore::open_folder(root_.path(), kJob);
        ASSERT_TRUE(folder.ok());
        auto rep = folder->repair();
        ASSERT_TRUE(rep.ok()) << rep.error().message();
        EXPECT_FALSE(rep->lines.empty());
        JobStore r = reader();
        const Index& idx = r.index();
        EXPECT_EQ(idx.job.name, before.job.name);
        EXPECT_EQ(idx.job.batch_script, "job-script");
        EXPECT_EQ(idx.restart_count, 2u);
        ASSERT_EQ(idx.sets.size(), before.sets.size());
        for (size_t i = 0; i < idx.sets.size(); ++i) {
            EXPECT_EQ(idx.sets[i].seq, before.sets[i].seq);
            EXPECT_EQ(idx.sets[i].state, before.sets[i].state);
            EXPECT_EQ(idx.sets[i].bytes(), before.sets[i].bytes());
            EXPECT_EQ(idx.sets[i].failure, before.sets[i].failure);
        }
        EXPECT_EQ(*r.newest_verified(), 2u);
    }
}

TEST_F(Store, EveryFlippedByteOfTheIndexIsRefused) {
    JobStore st = writer();
    write_committed_set(st, 2, 1);
    write_committed_set(st, 3, 2);
    std::string good = *read_file(index_path());
    std::string copy = root_.path() + "/flipped.h5";
    for (size_t off = 0; off < good.size(); off += 13) {
        std::string bad = good;
        bad[off] = static_cast<char>(bad[off] ^ 0x10);
        ::unlink(copy.c_str());
        int fd = ::open(copy.c_str(), O_WRONLY | O_CREAT, 0600);
        ASSERT_EQ(::write(fd, bad.data(), bad.size()), static_cast<ssize_t>(bad.size()));
        ::close(fd);
        auto idx = read_index(copy);
        ASSERT_FALSE(idx.ok()) << "flip at " << off << " went unnoticed";
        EXPECT_NE(idx.error().message().find(copy), std::string::npos) << idx.error().message();
    }
    ASSERT_EQ(::truncate(copy.c_str(), static_cast<off_t>(good.size() - 1)), 0);
    auto idx = read_index(copy);
    ASSERT_FALSE(idx.ok());
    EXPECT_NE(idx.error().message().find("truncated index"), std::string::npos)
        << idx.error().message();
}

TEST_F(Store, RepairKeepsAHalfWrittenSetOfTheLiveRunAndFailsAbandonedOnes) {
    JobStore old_run = writer(0);
    write_committed_set(old_run, 1, 1);
    auto abandoned = old_run.begin_set({Trigger::Interval, 0, 1, 1, {}});
    JobStore new_run = writer(1);  // claims: the abandoned set of run 0 becomes failed
    EXPECT_EQ(reader().index().find(*abandoned)->state, SetState::Failed);
    auto live = new_run.begin_set({Trigger::Interval, 0, 1, 1, {}});
    ASSERT_EQ(::unlink(index_path().c_str()), 0);
    ASSERT_TRUE(JobStore::open_folder(root_.path(), kJob)->repair().ok());
    Index idx = reader().index();
    EXPECT_EQ(idx.find(1)->state, SetState::Committed);
    EXPECT_EQ(idx.find(*abandoned)->state, SetState::Failed);
    EXPECT_EQ(idx.find(*live)->state, SetState::Writing);
    // and the live writer can still commit it
    auto dir = new_run.make_member_dir(*live, 0);
    write_member_images(*dir, 3);
    ASSERT_TRUE(new_run.add_member(*live, 0, "node1", *dir).ok());
    ASSERT_TRUE(new_run.commit_set(*live).ok());
    EXPECT_EQ(reader().index().newest_committed()->seq, *live);
}

TEST_F(Store, RepairOfAMissingManifestOrFileMarksTheSetFailed) {
    JobStore st = writer();
    write_committed_set(st, 2, 1);
    write_committed_set(st, 2, 2);
    write_committed_set(st, 2, 3);
    ASSERT_EQ(::unlink((job_dir() + "/set-000002/manifest").c_str()), 0);
    ASSERT_EQ(::unlink(member_file(3, 1, "inventory.img").c_str()), 0);
    auto v = reader().verify_set(2);
    ASSERT_FALSE(v.ok());
    EXPECT_NE(v.error().message().find("manifest"), std::string::npos) << v.error().message();
    ASSERT_TRUE(JobStore::open_folder(root_.path(), kJob)->repair().ok());
    Index idx = reader().index();
    EXPECT_EQ(idx.find(1)->state, SetState::Committed);
    EXPECT_EQ(idx.find(2)->state, SetState::Failed);
    EXPECT_NE(idx.find(2)->failure.find("manifest unreadable"), std::string::npos);
    EXPECT_EQ(idx.find(3)->state, SetState::Failed);
    EXPECT_NE(idx.find(3)->failure.find("inventory.img"), std::string::npos)
        << idx.find(3)->failure;
    EXPECT_EQ(idx.newest_committed()->seq, 1u);
}

TEST_F(Store, ACommittedManifestOfADeadRunIsRolledForward) {
    // Run 0 died after writing its committed manifest but before replacing the index.
    JobStore st = writer(0);
    uint64_t seq = write_committed_set(st, 1, 1);
    Index idx = reader().index();
    idx.find(seq)->state = SetState::Writing;
    ASSERT_EQ(::unlink(index_path().c_str()), 0);
    ASSERT_TRUE(write_index_file(index_path(), idx).ok());
    EXPECT_EQ(reader().index().newest_committed(), nullptr);
    JobStore next = writer(1);
    EXPECT_EQ(reader().index().find(seq)->state, SetState::Committed);
    EXPECT_TRUE(reader().verify_set(seq).ok());
}

TEST_F(Store, AWriterRestartingInTheSameRunAbandonsItsOldSet) {
    auto first = writer(3);
    auto seq = first.begin_set({Trigger::Interval, 0, 1, 1, {}});
    ASSERT_TRUE(seq.ok());
    JobStore again = writer(3);  // the agent restarted
    Index idx = reader().index();
    const SetRecord* s = idx.find(*seq);
    EXPECT_EQ(s->state, SetState::Failed);
    EXPECT_NE(s->failure.find("abandoned"), std::string::npos) << s->failure;
    EXPECT_EQ(write_committed_set(again, 1), *seq + 1);
}

TEST_F(Store, FencingRefusesAnOlderRun) {
    JobStore stale = writer(1);
    write_committed_set(stale, 1, 1);
    auto in_flight = stale.begin_set({Trigger::Interval, 0, 1, 1, {}});
    ASSERT_TRUE(in_flight.ok());
    auto dir = stale.make_member_dir(*in_flight, 0);
    write_member_images(*dir, 5);
    ASSERT_TRUE(stale.add_member(*in_flight, 0, "node1", *dir).ok());

    JobStore current = writer(2);  // the requeued run claims the job
    uint64_t newer = write_committed_set(current, 1, 2);

    auto c = stale.commit_set(*in_flight);
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.error().code(), ESTALE);
    EXPECT_NE(c.error().message().find("run 1 but run 2"), std::string::npos)
        << c.error().message();
    auto b = stale.begin_set({Trigger::Interval, 0, 1, 1, {}});
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.error().code(), ESTALE);
    auto claim = JobStore::open_writer(root_.path(), sample_job(kJob), 1);
    ASSERT_FALSE(claim.ok());
    EXPECT_EQ(claim.error().code(), ESTALE);
    // The stale writer's failure changes nothing of the newer run's.
    ASSERT_TRUE(stale.fail_set(*in_flight, "fenced").ok());
    JobStore r = reader();
    EXPECT_EQ(r.index().newest_committed()->seq, newer);
    EXPECT_TRUE(r.verify_set(newer).ok());
    EXPECT_EQ(r.index().find(*in_flight)->state, SetState::Failed);
    // The same run may reopen (an agent restarting within the run).
    EXPECT_TRUE(JobStore::open_writer(root_.path(), sample_job(kJob), 2).ok());
}

TEST_F(Store, RepairFencesAStaleRunsLaterSet) {
    // Two live copies during a partition: run 2 begins set 2; stale run 1 writes set 3 in
    // a folder of its own (say through a lock that did not hold across nodes).
    JobStore stale = writer(1);
    write_committed_set(stale, 1, 1);
    JobStore current = writer(2);
    write_committed_set(current, 1, 2);
    std::filesystem::copy(job_dir() + "/set-000002", job_dir() + "/set-000003",
                          std::filesystem::copy_options::recursive);
    image::SetManifest mf;
    ASSERT_TRUE(
        image::read_image(job_dir() + "/set-000003/manifest", image::Kind::SetManifest, &mf).ok());
    mf.set_seq(3);
    mf.set_restart_count(1);
    for (auto& m : *mf.mutable_members()) m.set_image_dir("set-000003/" + m.image_dir().substr(11));
    ASSERT_EQ(::unlink((job_dir() + "/set-000003/manifest").c_str()), 0);
    ASSERT_TRUE(
        image::write_image(job_dir() + "/set-000003/manifest", image::Kind::SetManifest, mf).ok());
    ASSERT_TRUE(JobStore::open_folder(root_.path(), kJob)->repair().ok());
    Index after = reader().index();
    ASSERT_NE(after.find(3), nullptr);
    EXPECT_EQ(after.find(3)->state, SetState::Failed);
    EXPECT_NE(after.find(3)->failure.find("fenced"), std::string::npos) << after.find(3)->failure;
    EXPECT_EQ(after.newest_committed()->seq, 2u);
}

TEST_F(Store, OpeningAMissingJobSaysSo) {
    auto st = JobStore::open(root_.path(), 777);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code(), ENOENT);
    EXPECT_NE(st.error().message().find("job 777: no checkpoints"), std::string::npos)
        << st.error().message();
}

}  // namespace

// What a step runs is recorded with its sets (format 3), in the index and in the manifest a
// repair rebuilds the index from; a format 2 index reads back without it.
TEST_F(Store, StepCommandIsRecordedAndSurvivesRepair) {
    {
        JobStore st = writer();
        SetOptions o{Trigger::Manual, 4, 1, 1, {}};
        o.step_command = "3f2a9c0d11e0b7aa";
        auto seq = st.begin_set(o);
        ASSERT_TRUE(seq.ok());
        auto dir = st.make_member_dir(*seq, 0);
        write_member_images(*dir, 1);
        ASSERT_TRUE(st.add_member(*seq, 0, "node1", *dir).ok());
        ASSERT_TRUE(st.commit_set(*seq).ok());
    }
    EXPECT_EQ(reader().index().sets[0].step_command, "3f2a9c0d11e0b7aa");
    ASSERT_EQ(::unlink(index_path().c_str()), 0);
    {
        auto st = JobStore::open_folder(root_.path(), kJob);
        ASSERT_TRUE(st.ok());
        ASSERT_TRUE(st->repair().ok());
    }
    Index repaired = reader().index();
    ASSERT_EQ(repaired.sets.size(), 1u);
    EXPECT_EQ(repaired.sets[0].step_command, "3f2a9c0d11e0b7aa");
    EXPECT_EQ(repaired.sets[0].step_id, 4u);

    std::string v2 = job_dir() + "/v2.h5";
    ASSERT_TRUE(write_index_file(v2, repaired, 2).ok());
    ASSERT_EQ(::rename(v2.c_str(), index_path().c_str()), 0);
    Index old = reader().index();
    EXPECT_EQ(old.format_version, 2u);
    EXPECT_EQ(old.sets[0].step_command, "");
    EXPECT_EQ(old.sets[0].step_id, 4u);
}

namespace {

// Temporary files of the store have names nobody can predict, and are never written through
// a link: links planted at every name the writer used to choose (<name>.tmp.<pid> and
// .<name>.tmp.<pid>) leave their target alone.
TEST_F(Store, TemporaryNamesAreNotPredictableAndNeverFollowed) {
    JobStore w = writer();
    std::string dir = root_.path() + "/" + std::to_string(kJob);
    std::string canary = root_.path() + "/canary";
    overwrite(canary, "untouched");
    std::string pid = std::to_string(::getpid());
    for (std::string name : {"job-script", "job-environment", "index.h5"})
        for (std::string planted : {name + ".tmp." + pid, "." + name + ".tmp." + pid})
            ASSERT_EQ(::symlink(canary.c_str(), (dir + "/" + planted).c_str()), 0) << planted;
    ASSERT_TRUE(w.save_batch_script("#!/bin/sh\necho hi\n").ok());
    ASSERT_TRUE(w.save_environment(std::string("A=1\0", 4)).ok());
    uint64_t seq = *w.begin_set({Trigger::Manual, 0, 1, 1, {}});
    EXPECT_TRUE(w.fail_set(seq, "test").ok());
    std::ifstream in(canary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(text, "untouched");
    struct stat st;
    ASSERT_EQ(::lstat((dir + "/job-script").c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode));
}

// Names a node report gives for a member's files must stay inside the member's folder.
TEST_F(Store, AMemberReportNamingFilesOutsideIsRefused) {
    JobStore w = writer();
    uint64_t seq = *w.begin_set({Trigger::Manual, 0, 1, 1, {}});
    std::string rel = set_folder_name(seq) + "/member-0";
    for (std::string bad : {"../../../etc/passwd", "/etc/passwd", "a/../../x", ""}) {
        auto r = w.add_member(seq, MemberReport{0, "n", rel, {{bad, 1, 1}}});
        EXPECT_FALSE(r.ok()) << bad;
    }
    for (std::string bad_dir : {set_folder_name(seq) + "/../..", set_folder_name(seq) + "/./x", std::string("/etc")}) {
        auto r = w.add_member(seq, MemberReport{0, "n", bad_dir, {{"core-1.img", 1, 1}}});
        EXPECT_FALSE(r.ok()) << bad_dir;
    }
    EXPECT_TRUE(is_plain_relative_path("set-000001/member-0/core-1.img"));
    EXPECT_FALSE(is_plain_relative_path("set-000001//x"));
}

}  // namespace

// Two-level storage (local_dir=): a set commits at the local level first (still "writing" in
// the shared root), then at the shared level once its members were copied there. Retention
// counts only sets complete in the shared root; a new run's claim fails a set that never
// reached it; only the newest set keeps its local level.
TEST_F(Store, TwoLevelSetsCommitLocallyThenInTheSharedRoot) {
    TempRoot local;
    JobStore st = writer();
    auto two_level_set = [&](uint32_t seed, bool drain) -> uint64_t {
        auto seq = st.begin_set({Trigger::Interval, 0, 1, 1, {}});
        EXPECT_TRUE(seq.ok());
        std::string rel = fmt::format("{}/member-0", set_folder_name(*seq));
        std::string local_dir = local.path() + "/" + rel;
        std::filesystem::create_directories(local_dir);
        write_member_images(local_dir, seed);
        auto files = scan_member_files(local_dir);
        EXPECT_TRUE(files.ok());
        EXPECT_TRUE(st.add_member(*seq, {0, "n1", rel, *files}).ok());
        auto c = st.commit_local(*seq);
        EXPECT_TRUE(c.ok()) << c.error().message();
        JobStore r = reader();
        const SetRecord* s = r.index().find(*seq);
        EXPECT_EQ(s->state, SetState::Writing);
        EXPECT_EQ(s->levels(), "local");
        if (!drain) return *seq;
        auto dir = st.make_member_dir(*seq, 0);
        std::filesystem::copy(local_dir, *dir, std::filesystem::copy_options::recursive |
                                                   std::filesystem::copy_options::overwrite_existing);
        c = st.commit_set(*seq);
        EXPECT_TRUE(c.ok()) << c.error().message();
        EXPECT_EQ(reader().index().find(*seq)->levels(), "local shared");
        return *seq;
    };
    uint64_t one = two_level_set(1, true);
    uint64_t two = two_level_set(2, false);
    Index idx = reader().index();
    EXPECT_EQ(idx.find(one)->levels(), "shared");  // the nodes keep their newest local set only
    EXPECT_EQ(idx.find(two)->levels(), "local");
    ASSERT_TRUE(st.keep_newest(1).ok());
    EXPECT_EQ(seqs_on_disk(), (std::vector<uint64_t>{one, two}));
    EXPECT_TRUE(reader().verify_set(one).ok());
    EXPECT_FALSE(reader().verify_set(two).ok());

    // The node is lost before the drain: the next run's claim fails set 2; set 1 restores.
    JobStore next = writer(1);
    idx = reader().index();
    EXPECT_EQ(idx.find(two)->state, SetState::Failed);
    EXPECT_EQ(idx.find(two)->levels(), "local");
    EXPECT_EQ(*reader().newest_verified(), one);
    // Repair rebuilds the levels from the manifests.
    std::filesystem::remove(index_path());
    auto opened = JobStore::open_folder(root_.path(), kJob);
    ASSERT_TRUE(opened.ok());
    ASSERT_TRUE(opened->repair().ok());
    idx = reader().index();
    EXPECT_EQ(idx.find(one)->levels(), "shared");
    EXPECT_EQ(idx.find(two)->levels(), "local");
    EXPECT_EQ(idx.find(one)->state, SetState::Committed);
}

TEST(Model, LevelsAreParsedStrictly) {
    SetRecord s;
    s.state = SetState::Committed;
    EXPECT_TRUE(parse_levels("local shared", s).ok());
    EXPECT_TRUE(s.local_complete);
    EXPECT_FALSE(parse_levels("local", s).ok());  // committed is complete in the shared root
    EXPECT_FALSE(parse_levels("shared tape", s).ok());
    s.state = SetState::Writing;
    EXPECT_FALSE(parse_levels("shared", s).ok());
    EXPECT_TRUE(parse_levels("", s).ok());
    EXPECT_FALSE(s.local_complete);
}
