// Timers: interval timers (real, virtual, prof) and POSIX timers with their ids, read and
// set from inside the process. Remaining times are relative, so the time a process spent
// frozen or in images does not count against its timers.
#include <signal.h>
#include <sys/syscall.h>
#include <sys/time.h>

#include <chrono>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "proc.h"
#include "restore_task.h"
#include "task_state.h"

namespace ckpt::engine {
namespace {

constexpr int kPrTimerCreateRestoreIds = 77;  // linux 6.17: timer_create takes the id given

struct KItimerval {
    int64_t interval_sec, interval_usec, value_sec, value_usec;
};
struct KTimespec {
    int64_t sec, nsec;
};
struct KItimerspec {
    int64_t interval_sec, interval_nsec, value_sec, value_nsec;
};
struct KSigevent {
    uint64_t value;
    int32_t signo;
    int32_t notify;
    int32_t tid;
    int32_t pad[11];
};
static_assert(sizeof(KSigevent) == 64);

void to_proto(const KItimerval& v, image::ITimer* t) {
    t->set_interval_sec(static_cast<uint64_t>(v.interval_sec));
    t->set_interval_usec(static_cast<uint64_t>(v.interval_usec));
    t->set_value_sec(static_cast<uint64_t>(v.value_sec));
    t->set_value_usec(static_cast<uint64_t>(v.value_usec));
}

// /proc/PID/timers: "ID: 3", "signal: 14/00007f...", "notify: signal/pid.123", "ClockID: 1".
Result<std::vector<image::PosixTimer>> read_posix_timers(pid_t pid) {
    std::string path = proc_path(pid, "timers");
    std::string text = CKPT_TRY(read_file(path));
    std::vector<image::PosixTimer> out;
    for (auto line : split(text, '\n')) {
        // Each number names its line and file when it does not parse.
        auto num = [&](std::string_view v, int base = 10) -> Result<int64_t> {
            return parse_int(trim(v), base).context("{}: line '{}'", path, line);
        };
        if (starts_with(line, "ID:")) {
            out.emplace_back().set_id(static_cast<int32_t>(CKPT_TRY(num(line.substr(3)))));
            continue;
        }
        if (out.empty()) continue;
        auto& t = out.back();
        if (starts_with(line, "signal:")) {
            auto parts = split(trim(line.substr(7)), '/');
            if (parts.size() != 2) return error_code(EINVAL, "{}: malformed line '{}'", path, line);
            t.set_signo(static_cast<int32_t>(CKPT_TRY(num(parts[0]))));
            t.set_sival(CKPT_TRY_CTX(parse_uint(parts[1], 16), "{}: line '{}'", path, line));
        } else if (starts_with(line, "notify:")) {
            auto v = trim(line.substr(7));
            auto slash = v.find('/'), dot = v.find('.');
            if (slash == std::string_view::npos || dot == std::string_view::npos)
                return error_code(EINVAL, "{}: malformed line '{}'", path, line);
            auto kind = v.substr(0, slash);
            int notify = kind == "none" ? SIGEV_NONE : kind == "thread" ? SIGEV_THREAD : SIGEV_SIGNAL;
            if (v.substr(slash + 1, 3) == "tid") notify |= SIGEV_THREAD_ID;
            t.set_notify(notify);
            t.set_notify_tid(static_cast<int32_t>(CKPT_TRY(num(v.substr(dot + 1)))));
        } else if (starts_with(line, "ClockID:")) {
            t.set_clock_id(static_cast<int32_t>(CKPT_TRY(num(line.substr(8)))));
        }
    }
    return out;
}

// Setting a CPU-time itimer adds one tick to it (so that it never fires early); the
// engine measures that tick on itself once and takes it off again at restore.
int64_t cpu_itimer_tick_usec() {
    static int64_t tick = [] {
        itimerval set{{0, 0}, {1000, 0}}, got{}, none{};
        if (setitimer(ITIMER_PROF, &set, nullptr) != 0) return int64_t{0};
        getitimer(ITIMER_PROF, &got);
        setitimer(ITIMER_PROF, &none, nullptr);
        int64_t extra = (got.it_value.tv_sec - 1000) * 1000000 + got.it_value.tv_usec;
        return extra > 0 && extra < 100000 ? extra : int64_t{0};
    }();
    return tick;
}

// A timer whose signal is still pending counts its overruns inside the kernel, where no
// interface reads them, until the signal is delivered. Taking the signal inside the
// process (sigtimedwait) makes the kernel fill in si_overrun; queueing that siginfo again
// leaves the process as it was, with the overrun now recorded among its pending signals.
// A restored process may hold two instances for one timer (the one queued at restore and
// one its re-armed timer added, for real-time signals): they are merged into one, as the
// kernel would have kept them, with the expiries of the second counted as overruns.
//
// shared_pending is the process's pending set as read once for the whole dump: settling
// one timer queues again all it took, so the set stays true for the next. A timer that
// fires after that read is in the same place as one that fires after its settling (the
// tree is frozen, its timers are not): a fresh read would only narrow a window that stays.
// pid is the engine's view of the process, own_pid its own (the signals are queued again
// from inside it, in its pid namespace).
//
// Taking the timer's instance frees its place: an expiry between the take and the queueing
// again adds a fresh instance (no overruns) ahead of the one that carries them, which a
// process that was left running would take first. A pass during which the timer may have
// expired (its time to expiry grew, or a whole interval went by) is followed by another,
// which merges that instance in; after kMaxPasses the timer is left as it is (it fires
// faster than the engine can settle it).
Result<void> settle_pending_timer_signal(pid_t pid, pid_t own_pid, uint64_t shared_pending, RemoteThread& rt,
                                         RemoteScratch& scratch, const image::PosixTimer& t) {
    if (t.notify() != SIGEV_SIGNAL || t.signo() <= 0 || t.signo() > 64) return ok();
    if (!(shared_pending & (1ull << (t.signo() - 1)))) return ok();
    auto s = scratch.scope();
    uint64_t set = CKPT_TRY(s.put(uint64_t{1} << (t.signo() - 1)));
    uint64_t no_wait = CKPT_TRY(s.put(KTimespec{0, 0}));
    uint64_t info_at = CKPT_TRY(s.take(sizeof(siginfo_t), alignof(siginfo_t)));
    uint64_t spec_at = CKPT_TRY(s.take(sizeof(KItimerspec)));
    auto time_to_expiry = [&]() -> Result<int64_t> {
        KItimerspec spec{};
        CKPT_TRY(rt.syscall_ok("timer_gettime", SYS_timer_gettime, {static_cast<uint64_t>(t.id()), spec_at}));
        CKPT_TRY(read_remote(pid, spec_at, &spec, sizeof spec));
        return spec.value_sec * 1000000000 + spec.value_nsec;
    };
    constexpr int kMaxPasses = 8;
    for (int pass = 1;; ++pass) {
        const int64_t before = CKPT_TRY(time_to_expiry());
        const auto began = std::chrono::steady_clock::now();
        // Take every pending instance of the signal, in order.
        std::vector<siginfo_t> taken;
        for (int guard = 0; guard < 1024; ++guard) {
            int64_t sig = CKPT_TRY(rt.syscall(SYS_rt_sigtimedwait, {set, info_at, no_wait, 8}));
            if (sig != t.signo()) break;
            siginfo_t info{};
            CKPT_TRY(read_remote(pid, info_at, &info, sizeof info));
            taken.push_back(info);
        }
        // Merge this timer's instances into its first.
        std::vector<siginfo_t> requeue;
        requeue.reserve(taken.size());  // first points into it
        siginfo_t* first = nullptr;
        for (auto& info : taken) {
            bool ours = info.si_code == SI_TIMER && info.si_timerid == t.id();
            if (ours && first) {
                first->si_overrun += info.si_overrun + 1;
                continue;
            }
            requeue.push_back(info);
            if (ours) first = &requeue.back();
        }
        for (auto& info : requeue) {
            CKPT_TRY(write_remote(pid, info_at, &info, sizeof info));
            CKPT_TRY(rt.syscall_ok("rt_sigqueueinfo", SYS_rt_sigqueueinfo,
                                   {static_cast<uint64_t>(own_pid), static_cast<uint64_t>(t.signo()), info_at}));
        }
        const int64_t after = CKPT_TRY(time_to_expiry());
        const int64_t elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - began).count();
        const int64_t interval = static_cast<int64_t>(t.interval_ns());
        const bool may_have_expired =
            interval > 0 ? after > before || elapsed >= interval : before > 0 && after == 0;
        if (!may_have_expired || !first) return ok();
        if (pass == kMaxPasses) {
            logger()->debug("pid {}: POSIX timer {} expires too often to settle its pending signal in {} passes", pid,
                            t.id(), kMaxPasses);
            return ok();
        }
    }
}

}  // namespace

Result<void> dump_timers(const FrozenProcess& p, RemoteThread& rt, RemoteScratch& scratch, image::TaskCore* core) {
    const pid_t pid = p.pid;
    image::ITimer* dst[3] = {core->mutable_itimer_real(), core->mutable_itimer_virt(), core->mutable_itimer_prof()};
    for (int which = 0; which < 3; ++which) {
        auto s = scratch.scope();
        KItimerval v{};
        uint64_t at = CKPT_TRY(s.take(sizeof v));
        CKPT_TRY(rt.syscall_ok("getitimer", SYS_getitimer, {static_cast<uint64_t>(which), at}));
        CKPT_TRY(read_remote(pid, at, &v, sizeof v));
        to_proto(v, dst[which]);
    }
    for (auto& t : CKPT_TRY(read_posix_timers(pid))) {
        KItimerspec spec{};
        {
            auto s = scratch.scope();
            uint64_t at = CKPT_TRY(s.take(sizeof spec));
            CKPT_TRY(rt.syscall_ok("timer_gettime", SYS_timer_gettime, {static_cast<uint64_t>(t.id()), at}));
            CKPT_TRY(read_remote(pid, at, &spec, sizeof spec));
        }
        t.set_interval_ns(static_cast<uint64_t>(spec.interval_sec * 1000000000 + spec.interval_nsec));
        t.set_value_ns(static_cast<uint64_t>(spec.value_sec * 1000000000 + spec.value_nsec));
        CKPT_TRY(settle_pending_timer_signal(pid, p.ns_pid, p.status.shd_pnd, rt, scratch, t));
        *core->add_posix_timers() = t;
    }
    return ok();
}

Result<void> restore_timers(RestoreTask& t) {
    RemoteThread& rt = *t.leader;
    const image::ITimer* src[3] = {&t.core.itimer_real(), &t.core.itimer_virt(), &t.core.itimer_prof()};
    for (int which = 0; which < 3; ++which) {
        KItimerval v{static_cast<int64_t>(src[which]->interval_sec()), static_cast<int64_t>(src[which]->interval_usec()),
                     static_cast<int64_t>(src[which]->value_sec()), static_cast<int64_t>(src[which]->value_usec())};
        if (!v.value_sec && !v.value_usec) continue;
        if (which != ITIMER_REAL) {
            int64_t usec = v.value_sec * 1000000 + v.value_usec - cpu_itimer_tick_usec();
            if (usec < 1) usec = 1;
            v.value_sec = usec / 1000000;
            v.value_usec = usec % 1000000;
        }
        auto s = t.scratch.scope();
        uint64_t at = CKPT_TRY(s.put(v));
        CKPT_TRY(rt.syscall_ok("setitimer", SYS_setitimer, {static_cast<uint64_t>(which), at, 0}));
    }
    if (t.core.posix_timers_size() == 0) return ok();
    CKPT_TRY_CTX(rt.syscall_ok("prctl(PR_TIMER_CREATE_RESTORE_IDS)", SYS_prctl, {kPrTimerCreateRestoreIds, 1}),
                 "pid {}: POSIX timers need linux 6.17 or later to keep their ids", t.pid);
    for (const auto& pt : t.core.posix_timers()) {
        KSigevent sev{};
        sev.value = pt.sival();
        sev.signo = pt.signo();
        sev.notify = pt.notify();
        sev.tid = pt.notify_tid();
        auto s = t.scratch.scope();
        uint64_t sev_at = CKPT_TRY(s.put(sev));
        uint64_t id_at = CKPT_TRY(s.put(pt.id()));
        CKPT_TRY_CTX(rt.syscall_ok("timer_create", SYS_timer_create,
                                   {static_cast<uint64_t>(pt.clock_id()), sev_at, id_at}),
                     "pid {}: timer {}", t.pid, pt.id());
        int32_t got = 0;
        CKPT_TRY(read_remote(t.host, id_at, &got, sizeof got));
        if (got != pt.id()) return error("pid {}: timer {} was created with id {}", t.pid, pt.id(), got);
        if (pt.value_ns() == 0) continue;
        KItimerspec spec{static_cast<int64_t>(pt.interval_ns() / 1000000000), static_cast<int64_t>(pt.interval_ns() % 1000000000),
                         static_cast<int64_t>(pt.value_ns() / 1000000000), static_cast<int64_t>(pt.value_ns() % 1000000000)};
        uint64_t spec_at = CKPT_TRY(s.put(spec));
        CKPT_TRY(rt.syscall_ok("timer_settime", SYS_timer_settime, {static_cast<uint64_t>(pt.id()), 0, spec_at, 0}));
    }
    CKPT_TRY(rt.syscall_ok("prctl(PR_TIMER_CREATE_RESTORE_IDS)", SYS_prctl, {kPrTimerCreateRestoreIds, 0}));
    return ok();
}

}  // namespace ckpt::engine
