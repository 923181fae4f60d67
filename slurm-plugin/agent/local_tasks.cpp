#include "local_tasks.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ckpt/base/log.h"
#include "ckpt/base/strings.h"

namespace ckpt::slurm::agent {

bool Task::exited() const {
    if (!pidfd) return false;
    pollfd p{pidfd.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
}

TaskFeed::TaskFeed(int fd) : fd_(fd) {
    if (fd_ >= 0) ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
}

bool TaskFeed::poll(std::vector<Task>& tasks) {
    raw_.clear();
    if (fd_ < 0) return false;
    char buf[512];
    for (;;) {
        ssize_t n = ::read(fd_, buf, sizeof buf);
        if (n > 0) {
            pending_.append(buf, static_cast<size_t>(n));
            raw_.append(buf, static_cast<size_t>(n));
            continue;
        }
        if (n == 0) fd_ = -1;  // the writer closed its end: no more tasks
        break;
    }
    size_t nl;
    while ((nl = pending_.find('\n')) != std::string::npos) {
        auto parts = split(std::string_view(pending_).substr(0, nl), ' ');
        if (parts.size() == 2) {
            auto pid = parse_int(parts[0]);
            auto gid = parse_int(parts[1]);
            if (pid && gid) {
                // The task is slurmstepd's unreaped child, so its pid is still its own.
                Task t{static_cast<pid_t>(*pid), static_cast<int32_t>(*gid),
                       UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(*pid), 0)))};
                if (!t.pidfd) log::get("slurm")->warn("task {}: pidfd_open: {}", *pid, strerror(errno));
                log::get("slurm")->info("task {} (global id {}) is pid {}", tasks.size(), *gid, *pid);
                tasks.push_back(std::move(t));
            }
        }
        pending_.erase(0, nl + 1);
    }
    return fd_ >= 0;
}

std::string exe_of(pid_t pid) {
    char buf[4096];
    ssize_t n = ::readlink(fmt::format("/proc/{}/exe", pid).c_str(), buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

std::vector<pid_t> children_of(pid_t pid) {
    std::vector<pid_t> out;
    DIR* d = ::opendir(fmt::format("/proc/{}/task", pid).c_str());
    if (!d) return out;
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        auto text = read_file(fmt::format("/proc/{}/task/{}/children", pid, e->d_name));
        if (!text) continue;
        for (auto w : split(trim(*text), ' '))
            if (auto c = parse_int(w); c) out.push_back(static_cast<pid_t>(*c));
    }
    ::closedir(d);
    return out;
}

std::string comm_of(pid_t pid) {
    auto c = read_file(fmt::format("/proc/{}/comm", pid));
    return c ? std::string(trim(*c)) : "";
}

Result<pid_t> launched_by(pid_t task, const std::string& agent_exe) {
    if (exe_of(task) != agent_exe) return task;
    auto kids = children_of(task);
    if (kids.size() != 1)
        return error("task {}: relay has {} children, expected 1", task, kids.size());
    return kids[0];
}

Result<pid_t> tree_root(pid_t task, const std::string& agent_exe, const std::string& engine_exe) {
    pid_t p = CKPT_TRY(launched_by(task, agent_exe));
    for (int depth = 0; depth < 4 && !engine_exe.empty() && exe_of(p) == engine_exe; ++depth) {
        auto kids = children_of(p);
        if (kids.size() != 1)
            return error("task {}: engine process {} has {} children, expected 1", task, p,
                         kids.size());
        p = kids[0];
    }
    return p;
}

bool tree_has(pid_t root, std::string_view comm) {
    std::vector<pid_t> todo{root};
    while (!todo.empty()) {
        pid_t p = todo.back();
        todo.pop_back();
        if (comm_of(p) == comm) return true;
        for (pid_t c : children_of(p)) todo.push_back(c);
    }
    return false;
}

}  // namespace ckpt::slurm::agent
