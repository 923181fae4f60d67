// The quiesce coordinator against scripted ranks speaking the control protocol
// (mpi/include/ckpt/mpi/control.h): the phases, raised targets, the expected counts it hands
// out, and a clear error (with the cycle aborted on the others) for every way a rank fails.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <map>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "ckpt/mpi/control.h"
#include "coordinator.h"
#include "relay.h"

using namespace ckpt;
namespace ctl = ckpt::mpi::control;
using namespace std::chrono_literals;

namespace {

class FakeRank {
public:
    FakeRank(const std::string& path, int rank, int size, uint32_t version = ctl::kVersion) : rank_(rank) {
        fd_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        sockaddr_un a;
        auto len = mpi::unix_address(path, &a);  // a path, or "@name" (abstract)
        EXPECT_TRUE(len.ok());
        EXPECT_EQ(connect(fd_, reinterpret_cast<sockaddr*>(&a), *len), 0) << std::strerror(errno);
        ctl::Hello h;
        h.version = version;
        h.rank = rank;
        h.size = size;
        h.pid = 1;  // what a rank in its own pid namespace might say: the coordinator must not use it
        send(ctl::Msg::Hello, 0, &h, sizeof h);
    }
    ~FakeRank() { close(); }
    void close() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }
    void send(ctl::Msg type, uint32_t cycle, const void* p = nullptr, size_t n = 0) {
        std::string rec(sizeof(ctl::Header) + n, '\0');
        ctl::Header h{static_cast<uint32_t>(type), cycle};
        std::memcpy(rec.data(), &h, sizeof h);
        if (n) std::memcpy(rec.data() + sizeof h, p, n);
        ::send(fd_, rec.data(), rec.size(), MSG_NOSIGNAL);
    }
    // The next record: its type (0 at end of file), cycle and payload.
    uint32_t recv(uint32_t* cycle, std::string* payload) {
        std::string buf(ctl::kMaxRecord, '\0');
        ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
        if (n < static_cast<ssize_t>(sizeof(ctl::Header))) return 0;
        ctl::Header h;
        std::memcpy(&h, buf.data(), sizeof h);
        *cycle = h.cycle;
        payload->assign(buf.data() + sizeof h, n - sizeof h);
        return h.type;
    }
    uint32_t expect(ctl::Msg type, uint32_t* cycle, std::string* payload) {
        uint32_t t = recv(cycle, payload);
        EXPECT_EQ(t, static_cast<uint32_t>(type)) << "rank " << rank_;
        return t;
    }
    int rank_;
    int fd_ = -1;
};

// A well-behaved rank: one collective count, `sent` messages to each peer; on Targets it may
// first ask for a raise; returns the expected counts it was given.
std::vector<uint64_t> play_cycle(FakeRank& r, uint64_t seq, std::vector<uint64_t> sent, bool raise = false,
                                 std::vector<uint64_t>* targets_seen = nullptr) {
    uint32_t cycle = 0;
    std::string p;
    r.expect(ctl::Msg::Intent, &cycle, &p);
    ctl::CommSeq cs{42, seq};
    r.send(ctl::Msg::Seqs, cycle, &cs, sizeof cs);
    // Targets (perhaps several generations) until Stop; Reached for each generation.
    for (;;) {
        uint32_t type = r.recv(&cycle, &p);
        if (type == static_cast<uint32_t>(ctl::Msg::Stop)) break;
        EXPECT_EQ(type, static_cast<uint32_t>(ctl::Msg::Targets)) << "rank " << r.rank_;
        if (type != static_cast<uint32_t>(ctl::Msg::Targets)) return {};
        uint64_t generation;
        std::memcpy(&generation, p.data(), sizeof generation);
        ctl::CommSeq t;
        std::memcpy(&t, p.data() + sizeof generation, sizeof t);
        if (targets_seen) targets_seen->push_back(t.seq);
        if (raise) {
            raise = false;
            ctl::CommSeq need{42, t.seq + 1};
            r.send(ctl::Msg::Raise, cycle, &need, sizeof need);
            continue;
        }
        r.send(ctl::Msg::Reached, cycle, &generation, sizeof generation);
    }
    r.send(ctl::Msg::Sent, cycle, sent.data(), sent.size() * sizeof(uint64_t));
    r.expect(ctl::Msg::Expect, &cycle, &p);
    std::vector<uint64_t> expect(p.size() / sizeof(uint64_t));
    std::memcpy(expect.data(), p.data(), p.size());
    // Packed as a rank sends it: the header, then the lists back to back.
    ctl::Quiesced q{.control_fd = 7, .nthreads = 0, .nfds = 1, .nranges = 1};
    int32_t fd = 9;
    uint64_t range[2] = {0x1000, 0x2000};
    std::string parked(reinterpret_cast<const char*>(&q), sizeof q);
    parked.append(reinterpret_cast<const char*>(&fd), sizeof fd);
    parked.append(reinterpret_cast<const char*>(range), sizeof range);
    r.send(ctl::Msg::Quiesced, cycle, parked.data(), parked.size());
    r.expect(ctl::Msg::Resume, &cycle, &p);
    return expect;
}

struct Folder {
    std::string path;
    Folder() {
        char t[] = "/tmp/ckpt-coord-XXXXXX";
        path = mkdtemp(t);
    }
    ~Folder() { std::system(("rm -rf " + path).c_str()); }
};

}  // namespace

TEST(MpiCoordinator, OneCycleHandsOutTheTransposedCounts) {
    Folder dir;
    auto c = mpi::Coordinator::listen(dir.path + "/sock", 2);
    ASSERT_TRUE(c.ok()) << c.error().message();
    FakeRank r0(dir.path + "/sock", 0, 2), r1(dir.path + "/sock", 1, 2);
    ASSERT_TRUE(c->accept_ranks(5s).ok());
    std::vector<uint64_t> e0, e1;
    std::thread t0([&] { e0 = play_cycle(r0, 3, {0, 5}); });
    std::thread t1([&] { e1 = play_cycle(r1, 4, {7, 1}); });
    auto parked = c->quiesce(5s);
    EXPECT_TRUE(parked.ok()) << parked.error().message();
    EXPECT_TRUE(c->resume().ok());
    t0.join();
    t1.join();
    ASSERT_TRUE(parked.ok());
    // What each rank must have received from each: the others' sent counts, transposed.
    EXPECT_EQ(e0, (std::vector<uint64_t>{0, 7}));
    EXPECT_EQ(e1, (std::vector<uint64_t>{5, 1}));
    ASSERT_EQ(parked->size(), 2u);
    EXPECT_EQ((*parked)[1].pid, getpid()) << "the pid comes from the socket, not from the rank";
    EXPECT_EQ((*parked)[0].control_fd, 7);
    EXPECT_EQ((*parked)[0].lower_fds, std::vector<int>{9});
    ASSERT_EQ((*parked)[0].lower_memory.size(), 1u);
    EXPECT_EQ((*parked)[0].lower_memory[0].first, 0x1000u);
}

TEST(MpiCoordinator, ARaiseStartsANewGenerationOfTargets) {
    Folder dir;
    auto c = mpi::Coordinator::listen(dir.path + "/sock", 2);
    ASSERT_TRUE(c.ok());
    FakeRank r0(dir.path + "/sock", 0, 2), r1(dir.path + "/sock", 1, 2);
    ASSERT_TRUE(c->accept_ranks(5s).ok());
    std::vector<uint64_t> seen0, seen1;
    std::thread t0([&] { play_cycle(r0, 3, {0, 0}, /*raise=*/true, &seen0); });
    std::thread t1([&] { play_cycle(r1, 3, {0, 0}, false, &seen1); });
    auto parked = c->quiesce(5s);
    EXPECT_TRUE(parked.ok()) << parked.error().message();
    EXPECT_TRUE(c->resume().ok());
    t0.join();
    t1.join();
    EXPECT_EQ(seen0, (std::vector<uint64_t>{3, 4}));
    EXPECT_EQ(seen1, (std::vector<uint64_t>{3, 4})) << "every rank gets the raised targets";
}

TEST(MpiCoordinator, ARankThatLeavesFailsTheCycleAndTheOthersGoOn) {
    Folder dir;
    auto c = mpi::Coordinator::listen(dir.path + "/sock", 2);
    ASSERT_TRUE(c.ok());
    FakeRank r0(dir.path + "/sock", 0, 2), r1(dir.path + "/sock", 1, 2);
    ASSERT_TRUE(c->accept_ranks(5s).ok());
    uint32_t aborted = 0;
    std::thread t0([&] {
        uint32_t cycle;
        std::string p;
        r0.expect(ctl::Msg::Intent, &cycle, &p);
        ctl::CommSeq cs{42, 1};
        r0.send(ctl::Msg::Seqs, cycle, &cs, sizeof cs);
        aborted = r0.recv(&cycle, &p);  // rank 1 never answers: no targets
    });
    std::thread t1([&] {
        uint32_t cycle;
        std::string p;
        r1.expect(ctl::Msg::Intent, &cycle, &p);
        r1.close();  // killed
    });
    auto parked = c->quiesce(5s);
    t1.join();
    t0.join();
    ASSERT_FALSE(parked.ok());
    EXPECT_NE(parked.error().message().find("rank 1"), std::string::npos) << parked.error().message();
    EXPECT_EQ(aborted, static_cast<uint32_t>(ctl::Msg::Abort)) << "the other rank is told to go on";
    auto again = c->quiesce(1s);
    ASSERT_FALSE(again.ok());
    EXPECT_NE(again.error().message().find("rank 1"), std::string::npos) << again.error().message();
}

TEST(MpiCoordinator, FinalizeDuringACycleIsNamed) {
    Folder dir;
    auto c = mpi::Coordinator::listen(dir.path + "/sock", 1);
    ASSERT_TRUE(c.ok());
    FakeRank r0(dir.path + "/sock", 0, 1);
    ASSERT_TRUE(c->accept_ranks(5s).ok());
    std::thread t0([&] {
        uint32_t cycle;
        std::string p;
        r0.expect(ctl::Msg::Intent, &cycle, &p);
        r0.send(ctl::Msg::Bye, 0);
    });
    auto parked = c->quiesce(5s);
    t0.join();
    ASSERT_FALSE(parked.ok());
    EXPECT_NE(parked.error().message().find("MPI_Finalize"), std::string::npos) << parked.error().message();
}

TEST(MpiCoordinator, ASilentRankIsNamedAtTheDeadline) {
    Folder dir;
    auto c = mpi::Coordinator::listen(dir.path + "/sock", 2);
    ASSERT_TRUE(c.ok());
    FakeRank r0(dir.path + "/sock", 0, 2), r1(dir.path + "/sock", 1, 2);
    ASSERT_TRUE(c->accept_ranks(5s).ok());
    std::thread t0([&] {
        uint32_t cycle;
        std::string p;
        r0.expect(ctl::Msg::Intent, &cycle, &p);
        ctl::CommSeq cs{42, 1};
        r0.send(ctl::Msg::Seqs, cycle, &cs, sizeof cs);
    });
    auto parked = c->quiesce(300ms);
    t0.join();
    ASSERT_FALSE(parked.ok());
    EXPECT_NE(parked.error().message().find("rank(s) 1"), std::string::npos) << parked.error().message();
}

TEST(MpiCoordinator, ForgedHellosAreRefused) {
    {
        Folder dir;
        auto c = mpi::Coordinator::listen(dir.path + "/sock", 2);
        ASSERT_TRUE(c.ok());
        FakeRank a(dir.path + "/sock", 0, 2), b(dir.path + "/sock", 0, 2);
        auto r = c->accept_ranks(2s);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().message().find("two ranks say they are rank 0"), std::string::npos) << r.error().message();
    }
    {
        Folder dir;
        auto c = mpi::Coordinator::listen(dir.path + "/sock", 2);
        ASSERT_TRUE(c.ok());
        FakeRank a(dir.path + "/sock", 0, 3);
        auto r = c->accept_ranks(2s);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().message().find("one of 3 ranks"), std::string::npos) << r.error().message();
    }
    {
        Folder dir;
        auto c = mpi::Coordinator::listen(dir.path + "/sock", 1);
        ASSERT_TRUE(c.ok());
        FakeRank a(dir.path + "/sock", 0, 1, ctl::kVersion + 1);
        auto r = c->accept_ranks(2s);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().message().find("control protocol"), std::string::npos) << r.error().message();
    }
    {
        Folder dir;
        auto c = mpi::Coordinator::listen(dir.path + "/sock", 1);
        ASSERT_TRUE(c.ok());
        auto r = c->accept_ranks(200ms);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().message().find("0 of 1 ranks"), std::string::npos) << r.error().message();
    }
}

// --- Relays: ranks on two nodes reach the lead's coordinator (mpi/coord/relay.h) -------------

namespace {

std::string unique_name(const char* what) {
    return "@ckpt-test-" + std::string(what) + "-" + std::to_string(getpid()) + "-" +
           std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
}

}  // namespace

TEST(MpiRelay, RanksOfTwoNodesReachTheLeadsCoordinatorAndTheirNodesKeepTheirExclusions) {
    std::string coord_name = unique_name("coord"), lead_ranks = unique_name("lead"), node_ranks = unique_name("node");
    auto c = mpi::Coordinator::listen(coord_name, 2, /*relayed=*/true);
    ASSERT_TRUE(c.ok()) << c.error().message();
    auto lead = mpi::Relay::start(lead_ranks);
    auto node = mpi::Relay::start(node_ranks);
    ASSERT_TRUE(lead.ok() && node.ok());
    auto where = (*lead)->serve_as_lead(coord_name);
    ASSERT_TRUE(where.ok()) << where.error().message();
    EXPECT_EQ(where->token.size(), 32u);
    (*node)->set_lead(*where);
    FakeRank r0(lead_ranks, 0, 2), r1(node_ranks, 1, 2);
    ASSERT_TRUE(c->accept_ranks(5s).ok());
    EXPECT_EQ((*node)->ranks(), (std::map<pid_t, int>{{getpid(), 1}}));
    std::vector<uint64_t> e0, e1;
    std::thread t0([&] { e0 = play_cycle(r0, 3, {0, 5}); });
    std::thread t1([&] { e1 = play_cycle(r1, 4, {7, 1}); });
    auto parked = c->quiesce(5s);
    EXPECT_TRUE(parked.ok()) << parked.error().message();
    // Parked: each node's relay holds its own rank's exclusions, keyed by the pid it saw.
    auto on_node = (*node)->parked();
    auto on_lead = (*lead)->parked();
    EXPECT_TRUE(c->resume().ok());
    t0.join();
    t1.join();
    ASSERT_TRUE(parked.ok());
    EXPECT_EQ(e0, (std::vector<uint64_t>{0, 7}));
    EXPECT_EQ(e1, (std::vector<uint64_t>{5, 1}));
    EXPECT_EQ((*parked)[1].pid, getpid()) << "the relay puts in the pid its node saw, not the rank's word";
    ASSERT_EQ(on_node.size(), 1u);
    ASSERT_EQ(on_lead.size(), 1u);
    const mpi::ParkedRank& p = on_node.begin()->second;
    EXPECT_EQ(p.rank, 1);
    EXPECT_EQ(p.control_fd, 7);
    EXPECT_EQ(p.lower_fds, std::vector<int>{9});
    ASSERT_EQ(p.lower_memory.size(), 1u);
    EXPECT_EQ(p.lower_memory[0], (std::pair<uint64_t, uint64_t>{0x1000, 0x2000}));
    // Resumed: nothing is parked any more (a dump now would be refused).
    for (int i = 0; i < 100 && !(*node)->parked().empty(); ++i) std::this_thread::sleep_for(10ms);
    EXPECT_TRUE((*node)->parked().empty());
    // The text form the agent's halves exchange carries it whole.
    auto back = mpi::decode_parked(mpi::encode_parked(p));
    ASSERT_TRUE(back.ok()) << back.error().message();
    EXPECT_EQ(back->lower_memory, p.lower_memory);
    EXPECT_EQ(back->lower_fds, p.lower_fds);
    EXPECT_EQ(back->pid, p.pid);
    EXPECT_FALSE(mpi::decode_parked("1 2 3 - - 10-5").ok()) << "an empty range";
    EXPECT_FALSE(mpi::decode_parked("1 2 3 -- - -").ok());
}

TEST(MpiRelay, ANodeWithoutTheTokenReachesNothing) {
    std::string coord_name = unique_name("coord"), lead_ranks = unique_name("lead"), node_ranks = unique_name("node");
    auto c = mpi::Coordinator::listen(coord_name, 1, /*relayed=*/true);
    ASSERT_TRUE(c.ok());
    auto lead = mpi::Relay::start(lead_ranks);
    auto node = mpi::Relay::start(node_ranks);
    ASSERT_TRUE(lead.ok() && node.ok());
    auto where = (*lead)->serve_as_lead(coord_name);
    ASSERT_TRUE(where.ok());
    mpi::LeadAddress forged = *where;
    forged.token[0] = forged.token[0] == '0' ? '1' : '0';
    (*node)->set_lead(forged);
    FakeRank r0(node_ranks, 0, 1);
    auto accepted = c->accept_ranks(1s);
    EXPECT_FALSE(accepted.ok()) << "a relay with a wrong token was let through";
    EXPECT_EQ(c->connected_ranks(), 0);
    uint32_t cycle = 0;
    std::string payload;
    EXPECT_EQ(r0.recv(&cycle, &payload), 0u) << "the rank's channel must close";
}

TEST(MpiRelay, ARelayedCoordinatorTakesNoOtherProcess) {
    std::string coord_name = unique_name("coord");
    auto c = mpi::Coordinator::listen(coord_name, 1, /*relayed=*/true);
    ASSERT_TRUE(c.ok());
    pid_t child = fork();
    if (child == 0) {
        FakeRank r(coord_name, 0, 1);
        sleep(2);
        _exit(0);
    }
    auto accepted = c->accept_ranks(1s);
    EXPECT_FALSE(accepted.ok()) << "a rank that is no relay of this process was accepted";
    EXPECT_EQ(c->connected_ranks(), 0);
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
}
