// The files the agents, the plugin and ckpt-job exchange in a job's folder
// (ckpt/slurm/coordination.h) and the saved sbatch options (submit_options.h).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "ckpt/slurm/coordination.h"
#include "ckpt/slurm/submit_options.h"

using namespace ckpt::slurm;

TEST(Coordination, ReportRoundTrip) {
    NodeReport r{7, 1, "n2", "", {}};
    r.members.push_back({3,
                         "set-000007/member-3",
                         {{"pages/pages 1.img", 4096, 0xabcdefull}, {"core-12.img", 10, 1}}});
    r.members.push_back({4, "set-000007/member-4", {}});
    auto back = decode_report(encode(r));
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(back->seq, 7u);
    EXPECT_EQ(back->node, "n2");
    ASSERT_EQ(back->members.size(), 2u);
    EXPECT_EQ(back->members[0].image_dir, "set-000007/member-3");
    ASSERT_EQ(back->members[0].files.size(), 2u);
    EXPECT_EQ(back->members[0].files[0].name, "pages/pages 1.img");  // spaces survive
    EXPECT_EQ(back->members[0].files[0].checksum, 0xabcdefull);
    EXPECT_TRUE(back->members[1].files.empty());
}

TEST(Coordination, EditedOrTornFilesAreRefused) {
    std::string text = encode(SetRequest{5, ckpt::set::Trigger::Manual, 2});
    auto req = decode_request(text);
    ASSERT_TRUE(req);
    EXPECT_EQ(req->seq, 5u);
    EXPECT_EQ(req->trigger, ckpt::set::Trigger::Manual);
    EXPECT_EQ(req->restart_count, 2u);
    EXPECT_EQ(req->parent, 0u);
    auto incremental = decode_request(encode(SetRequest{5, ckpt::set::Trigger::Interval, 2, 4}));
    ASSERT_TRUE(incremental);
    EXPECT_EQ(incremental->parent, 4u);
    EXPECT_EQ(incremental->tracked, 4u);  // the parent's dumps left the trackers
    EXPECT_FALSE(decode_request(encode(SetRequest{5, ckpt::set::Trigger::Interval, 2, 5})));  // not older
    auto full = decode_request(encode(SetRequest{5, ckpt::set::Trigger::Interval, 2, 0, 3}));
    ASSERT_TRUE(full);
    EXPECT_EQ(full->parent, 0u);
    EXPECT_EQ(full->tracked, 3u);
    EXPECT_FALSE(decode_request(encode(SetRequest{5, ckpt::set::Trigger::Interval, 2, 0, 5})));  // not older
    EXPECT_FALSE(decode_request(encode(SetRequest{5, ckpt::set::Trigger::Interval, 2, 4, 3})));  // not the parent

    std::string edited = text;
    edited[edited.find("seq 5") + 4] = '6';
    auto bad = decode_request(edited);
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().message().find("checksum mismatch"), std::string::npos);
    EXPECT_FALSE(decode_request(text.substr(0, text.size() - 5)));
    EXPECT_FALSE(decode_report(text));  // a request is not a report
}

TEST(Coordination, WritesReplaceAndNeverFollowLinks) {
    char tmpl[] = "/tmp/ckpt-coord-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    std::string dir = tmpl;
    auto fd = open_folder(dir, ::geteuid());
    ASSERT_TRUE(fd) << fd.error().message();
    ASSERT_TRUE(write_file_at(fd->get(), "status", "one"));
    ASSERT_TRUE(write_file_at(fd->get(), "status", "two"));
    EXPECT_EQ(*read_file_at(fd->get(), "status"), "two");
    struct stat st;
    ASSERT_EQ(::stat((dir + "/status").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);

    // A link the folder's owner planted is replaced, not written through, and not read.
    std::string victim = dir + "/victim";
    ASSERT_TRUE(write_file_at(fd->get(), "victim", "keep"));
    ASSERT_EQ(::symlink(victim.c_str(), (dir + "/link").c_str()), 0);
    EXPECT_FALSE(read_file_at(fd->get(), "link"));
    ASSERT_TRUE(write_file_at(fd->get(), "link", "root's data"));
    EXPECT_EQ(*read_file_at(fd->get(), "victim"), "keep");
    EXPECT_FALSE(open_folder(dir + "/link", std::nullopt));
    EXPECT_FALSE(open_folder(dir, ::geteuid() + 1));  // someone else's folder
    std::string cmd = "rm -rf " + dir;
    ASSERT_EQ(std::system(cmd.c_str()), 0);
}

TEST(SubmitOptions, WordsWithSpacesAndPercents) {
    std::vector<std::string> words = {"--output=/a b/out-%j.out", "--job-name=x", "--", "50", ""};
    std::string joined = join_submit_words(words);
    EXPECT_EQ(joined.find("/a b"), std::string::npos);
    auto back = split_submit_words(joined);
    words.pop_back();  // an empty word does not survive; arguments are never empty here
    EXPECT_EQ(back, words);
}
