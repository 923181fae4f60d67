// The settings logic of spank_ckpt.so: plugstack.conf arguments, option values, how options
// and site defaults combine, and the environment a job gets.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "ckpt/slurm/mpirun_args.h"
#include "ckpt/slurm/options.h"
#include "ckpt/slurm/submit_options.h"

using namespace ckpt::slurm;

TEST(PluginArgs, DefaultsWhenEmpty) {
    auto c = parse_plugin_args({});
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_EQ(c->root, "/var/spool/ckpt");
    EXPECT_EQ(c->keep, 2u);
    EXPECT_EQ(c->interval, 0u);
    EXPECT_TRUE(c->user_dir);
    EXPECT_TRUE(c->users.empty());
}

TEST(PluginArgs, EveryKey) {
    auto c = parse_plugin_args({"dir=/shared/ckpt", "engine=/opt/ckpt/bin/ckpt-engine",
                                "agent=/opt/ckpt/bin/ckpt-agent", "interval=1h", "min_interval=5m",
                                "keep=3", "max_keep=10", "user_dir=no", "users=alice, bob"});
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_EQ(c->root, "/shared/ckpt");
    EXPECT_EQ(c->engine, "/opt/ckpt/bin/ckpt-engine");
    EXPECT_EQ(c->agent, "/opt/ckpt/bin/ckpt-agent");
    EXPECT_EQ(c->interval, 3600u);
    EXPECT_EQ(c->min_interval, 300u);
    EXPECT_EQ(c->keep, 3u);
    EXPECT_EQ(c->max_keep, 10u);
    EXPECT_FALSE(c->user_dir);
    EXPECT_EQ(c->users, (std::vector<std::string>{"alice", "bob"}));
}

TEST(PluginArgs, BadOnesNameTheArgument) {
    struct Case {
        const char* arg;
        const char* says;
    } cases[] = {
        {"dir=relative", "plugin argument dir"},  {"dir", "expected key=value"},
        {"colour=blue", "unknown plugin argument"}, {"keep=0", "plugin argument keep"},
        {"interval=5x", "plugin argument interval"}, {"user_dir=maybe", "yes or no"},
        {"engine=bin/ckpt-engine", "absolute path"}, {"full_every=0", "plugin argument full_every"},
        {"full_every=65", "plugin argument full_every"},
        {"max_overhead=0", "plugin argument max_overhead"}, {"max_overhead=101", "plugin argument max_overhead"},
        {"compress=20", "plugin argument compress"}, {"compress=fast", "plugin argument compress"},
    };
    for (const auto& c : cases) {
        auto r = parse_plugin_args({c.arg});
        ASSERT_FALSE(r) << c.arg;
        EXPECT_NE(r.error().message().find(c.says), std::string::npos) << r.error().message();
    }
    EXPECT_FALSE(parse_plugin_args({"interval=1m", "min_interval=5m"}));
    EXPECT_FALSE(parse_plugin_args({"keep=5", "max_keep=3"}));
    EXPECT_EQ(parse_plugin_args({})->full_every, 8u);
    EXPECT_EQ(parse_plugin_args({"full_every=1"})->full_every, 1u);
    EXPECT_EQ(parse_plugin_args({})->max_overhead, 25u);
    EXPECT_EQ(parse_plugin_args({"max_overhead=100"})->max_overhead, 100u);
    EXPECT_EQ(parse_plugin_args({})->compress, 0u);
    EXPECT_EQ(parse_plugin_args({"compress=3"})->compress, 3u);
    EXPECT_EQ(parse_plugin_args({"compress=0"})->compress, 0u);
    auto capped = parse_plugin_args({"max_keep=1"});
    ASSERT_TRUE(capped);
    EXPECT_EQ(capped->keep, 1u);
}

TEST(Options, ValuesAndLimits) {
    PluginConfig site = *parse_plugin_args({"min_interval=1m", "max_keep=5"});
    JobOptions o;
    EXPECT_TRUE(set_option(o, Option::Interval, "2h", site));
    EXPECT_EQ(o.interval, 7200u);
    EXPECT_TRUE(set_option(o, Option::Interval, "0", site));  // off is always allowed
    EXPECT_EQ(o.interval, 0u);
    auto short_one = set_option(o, Option::Interval, "30s", site);
    ASSERT_FALSE(short_one);
    EXPECT_NE(short_one.error().message().find("minimum of 1m"), std::string::npos);
    auto bad = set_option(o, Option::Interval, "10:75", site);
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().message().rfind("--checkpoint-interval: ", 0), 0u) << bad.error().message();

    EXPECT_TRUE(set_option(o, Option::Keep, "5", site));
    EXPECT_FALSE(set_option(o, Option::Keep, "6", site));
    EXPECT_FALSE(set_option(o, Option::Keep, "0", site));
    EXPECT_TRUE(set_option(o, Option::Dir, "/scratch/me", site));
    EXPECT_FALSE(set_option(o, Option::Dir, "scratch", site));
    site.user_dir = false;
    EXPECT_FALSE(set_option(o, Option::Dir, "/scratch/me", site));
}

// user_dir=no forbids choosing a folder, but naming the site root itself (as ckpt-job
// restore does) is no choice: accepted in any spelling, and the job uses the root as
// configured.
TEST(Options, UserDirNoAcceptsTheSiteRoot) {
    char tmpl[] = "/tmp/ckpt-options-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    std::string base = tmpl, root = base + "/root", link = base + "/link";
    ASSERT_EQ(::mkdir(root.c_str(), 0700), 0);
    ASSERT_EQ(::symlink(root.c_str(), link.c_str()), 0);
    PluginConfig site = *parse_plugin_args({"dir=" + root, "user_dir=no"});
    for (const std::string& same :
         {root, root + "/", root + "//", base + "//root/.", base + "/x/../root", link, link + "/"}) {
        JobOptions o;
        EXPECT_TRUE(set_option(o, Option::Dir, same, site)) << same;
        auto s = resolve(o, site, "alice");
        ASSERT_TRUE(s) << same;
        EXPECT_EQ(s->dir, root) << same;
    }
    for (const std::string& other : {base, base + "/root2", root + "/sub", std::string("/tmp")}) {
        JobOptions o;
        auto r = set_option(o, Option::Dir, other, site);
        ASSERT_FALSE(r) << other;
        EXPECT_EQ(r.error().code(), EPERM);
        EXPECT_NE(r.error().message().find("disabled on this cluster"), std::string::npos);
    }
    // A root that does not exist here (sbatch on a login node without the file system) is
    // compared by its normal form.
    PluginConfig remote = *parse_plugin_args({"dir=/nonexistent/ckpt/root", "user_dir=no"});
    JobOptions o;
    EXPECT_TRUE(set_option(o, Option::Dir, "/nonexistent//ckpt/root/", remote));
    EXPECT_FALSE(set_option(o, Option::Dir, "/nonexistent/ckpt", remote));
    std::filesystem::remove_all(base);
}

TEST(Options, Restore) {
    auto a = parse_restore("123");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->job_id, 123u);
    EXPECT_FALSE(a->set);
    EXPECT_EQ(a->to_string(), "123");
    auto b = parse_restore("123:7");
    ASSERT_TRUE(b);
    EXPECT_EQ(b->set, 7u);
    EXPECT_EQ(b->to_string(), "123:7");
    for (const char* bad : {"", "0", "x", "12:", "12:x", "1:2:3", "99999999999"})
        EXPECT_FALSE(parse_restore(bad)) << bad;
}

TEST(Options, MpiRanks) {
    PluginConfig site = *parse_plugin_args({"dir=/ckpt"});
    JobOptions none;
    EXPECT_EQ(resolve(none, site, "alice")->mpi, MpiRanks::Linked);
    for (auto [text, want] : {std::pair{"auto", MpiRanks::Linked}, {"always", MpiRanks::All}, {"never", MpiRanks::None}}) {
        JobOptions o;
        ASSERT_TRUE(set_option(o, Option::Mpi, text, site)) << text;
        auto s = resolve(o, site, "alice");
        ASSERT_TRUE(s);
        EXPECT_TRUE(s->active);
        EXPECT_EQ(s->mpi, want);
        EXPECT_EQ(to_string(want), text);
    }
    JobOptions o;
    for (const char* bad : {"", "yes", "Always", "all"}) {
        auto r = set_option(o, Option::Mpi, bad, site);
        ASSERT_FALSE(r) << bad;
        EXPECT_NE(r.error().message().find("--checkpoint-mpi"), std::string::npos) << r.error().message();
    }
}

TEST(Mpirun, TranslatedToSrun) {
    using V = std::vector<std::string>;
    auto a = srun_for_mpirun({"-np", "4", "--map-by", "ppr:2:node", "-x", "FOO=a=b", "-x", "BAR", "--mca", "btl",
                              "self,tcp", "--oversubscribe", "--bind-to=core", "--allow-run-as-root", "./app", "-n",
                              "3"});
    ASSERT_TRUE(a) << a.error().message();
    EXPECT_EQ(a->args, (V{"--mpi=pmix", "--kill-on-bad-exit=1", "--ntasks=4", "--ntasks-per-node=2", "--overcommit",
                          "--cpu-bind=cores", "--export=ALL", "./app", "-n", "3"}));
    std::vector<std::pair<std::string, std::string>> env = {{"FOO", "a=b"}, {"OMPI_MCA_btl", "self,tcp"}};
    EXPECT_EQ(a->env, env);

    auto b = srun_for_mpirun({"-N", "1", "--wdir", "/w", "--tag-output", "--", "-weird-name"});
    ASSERT_TRUE(b) << b.error().message();
    EXPECT_EQ(b->args, (V{"--mpi=pmix", "--kill-on-bad-exit=1", "--ntasks-per-node=1", "--chdir=/w", "--label",
                          "-weird-name"}));
    EXPECT_TRUE(b->env.empty());

    auto c = srun_for_mpirun({"python3", "ring.py"});
    ASSERT_TRUE(c);
    EXPECT_EQ(c->args, (V{"--mpi=pmix", "--kill-on-bad-exit=1", "python3", "ring.py"}));
}

TEST(Mpirun, RefusedByName) {
    struct Case {
        std::vector<std::string> args;
        const char* says;
    };
    for (const Case& c : std::vector<Case>{{{"--hostfile", "h", "./a"}, "--hostfile"},
                                           {{"-H", "n1,n2", "./a"}, "-H"},
                                           {{"--map-by", "ppr:2:socket", "./a"}, "--map-by ppr:2:socket"},
                                           {{"--bind-to", "numa", "./a"}, "--bind-to numa"},
                                           {{"-np", "0", "./a"}, "-np"},
                                           {{"-np", "x", "./a"}, "-np"},
                                           {{"-np"}, "needs a value"},
                                           {{"-x", "1BAD=2", "./a"}, "-x 1BAD=2"},
                                           {{"--mca", "btl"}, "needs a value"},
                                           {{"-np", "2"}, "no program"},
                                           {{}, "no program"}}) {
        auto r = srun_for_mpirun(c.args);
        ASSERT_FALSE(r) << c.says;
        EXPECT_NE(r.error().message().find(c.says), std::string::npos) << r.error().message();
    }
}

TEST(Resolve, OptionsOverDefaultsAndEnvironment) {
    PluginConfig site = *parse_plugin_args({"dir=/ckpt", "keep=4"});
    JobOptions none;
    auto off = resolve(none, site, "alice");
    ASSERT_TRUE(off);
    EXPECT_FALSE(off->active);
    EXPECT_TRUE(job_environment(*off).empty());

    JobOptions o;
    ASSERT_TRUE(set_option(o, Option::Interval, "10m", site));
    ASSERT_TRUE(set_option(o, Option::Restore, "42:3", site));
    ASSERT_TRUE(set_option(o, Option::NoRestart, "", site));
    auto s = resolve(o, site, "alice");
    ASSERT_TRUE(s);
    auto env = job_environment(*s);
    std::vector<std::pair<std::string, std::string>> want = {
        {"CKPT_INTERVAL", "600"}, {"CKPT_DIR", "/ckpt"}, {"CKPT_KEEP", "4"},
        {"CKPT_RESTART", "0"},    {"CKPT_RESTORE", "42:3"}};
    EXPECT_EQ(env, want);

    // A site default interval makes every allowed user's job active.
    site.interval = 3600;
    auto by_default = resolve(none, site, "alice");
    ASSERT_TRUE(by_default);
    EXPECT_TRUE(by_default->active);
    EXPECT_EQ(by_default->interval, 3600u);
}

TEST(Resolve, UsersList) {
    PluginConfig site = *parse_plugin_args({"users=alice", "interval=1h"});
    JobOptions o;
    ASSERT_TRUE(set_option(o, Option::Interval, "10m", site));
    EXPECT_TRUE(resolve(o, site, "alice"));
    auto refused = resolve(o, site, "mallory");
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("user mallory may not"), std::string::npos);
    // Without options, a user not on the list just runs without checkpoints.
    auto quiet = resolve(JobOptions{}, site, "mallory");
    ASSERT_TRUE(quiet);
    EXPECT_FALSE(quiet->active);
}

TEST(FormatInterval, ShortestExactUnit) {
    EXPECT_EQ(format_interval(0), "0");
    EXPECT_EQ(format_interval(90), "90s");
    EXPECT_EQ(format_interval(600), "10m");
    EXPECT_EQ(format_interval(7200), "2h");
    EXPECT_EQ(format_interval(86400), "1d");
}

// What ckpt-job restore gives the new job: the job's environment without what Slurm and
// the plugin set for each job.
TEST(SavedEnvironment, LeavesOutWhatEveryJobGetsAnew) {
    std::vector<std::string> env = {"HOME=/home/alice",
                                    "CKPT_TEST_VAR=a b\nc",
                                    "SLURM_JOB_ID=42",
                                    "SLURM_SPANK_CKPT_JOB_INCARNATION=abcd",
                                    "SLURMD_NODENAME=n1",
                                    "_SLURM_SPANK_OPTION_ckpt_checkpoint_interval=10m",
                                    "CKPT_DIR=/ckpt",
                                    "CKPT_RESTORE=41:2",
                                    "CKPT_INTERVAL=600",
                                    "CKPT_KEEP=2",
                                    "CKPT_RESTART=1",
                                    "CKPT_ROOT=/mine",
                                    "EMPTY=",
                                    "=novalue",
                                    "noequals"};
    EXPECT_EQ(environment_to_save(env),
              std::string("HOME=/home/alice\0CKPT_TEST_VAR=a b\nc\0CKPT_ROOT=/mine\0EMPTY=\0", 60));
    EXPECT_EQ(environment_to_save({}), "");
}

TEST(SavedEnvironment, OptionVariables) {
    EXPECT_EQ(option_variable("checkpoint-restore"), "_SLURM_SPANK_OPTION_ckpt_checkpoint_restore");
    EXPECT_EQ(option_variable("checkpoint-dir"), "_SLURM_SPANK_OPTION_ckpt_checkpoint_dir");
}

TEST(Incarnation, RandomHex) {
    auto a = new_incarnation(), b = new_incarnation();
    ASSERT_TRUE(a && b);
    EXPECT_EQ(a->size(), 32u);
    EXPECT_EQ(a->find_first_not_of("0123456789abcdef"), std::string::npos);
    EXPECT_NE(*a, *b);
}

TEST(PluginArgs, LocalDirIsAnAbsolutePathWithOnlyTheNodeName) {
    auto c = parse_plugin_args({"local_dir=/local/%n/ckpt", "drain_hold=/etc/ckpt-hold"});
    ASSERT_TRUE(c.ok()) << c.error().message();
    EXPECT_EQ(c->local_dir, "/local/%n/ckpt");
    EXPECT_EQ(c->drain_hold, "/etc/ckpt-hold");
    EXPECT_FALSE(parse_plugin_args({"local_dir=local/%n"}).ok());
    EXPECT_FALSE(parse_plugin_args({"local_dir=/local/%u"}).ok());
    EXPECT_FALSE(parse_plugin_args({"local_dir=/local/%"}).ok());
    EXPECT_FALSE(parse_plugin_args({"drain_hold=hold"}).ok());
    EXPECT_EQ(*expand_local_dir("/local/%n/ckpt-%n", "n1"), "/local/n1/ckpt-n1");
    EXPECT_EQ(*expand_local_dir("/dev/shm", "n1"), "/dev/shm");
    for (const char* bad : {"", ".", "..", "a/b", "a b", "n%n"})
        EXPECT_FALSE(expand_local_dir("/local/%n", bad).ok()) << bad;
}
