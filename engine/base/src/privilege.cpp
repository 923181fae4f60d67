#include "ckpt/base/privilege.h"

#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"

namespace ckpt::privilege {

Result<Identity> user_identity(uid_t uid, gid_t gid) {
    passwd pw{};
    passwd* found = nullptr;
    std::vector<char> buf(16384);
    if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || !found)
        return error_code(EPERM, "uid {}: unknown user", uid);
    Identity id{uid, gid, {}};
    std::vector<gid_t> groups(64);
    for (;;) {
        int n = static_cast<int>(groups.size());
        if (::getgrouplist(pw.pw_name, gid, groups.data(), &n) >= 0) {
            groups.resize(static_cast<size_t>(n));
            break;
        }
        // Too small: n is now the size needed.
        if (n <= static_cast<int>(groups.size()))
            return error_code(EPERM, "uid {}: cannot list the user's groups", uid);
        groups.resize(static_cast<size_t>(n));
    }
    std::sort(groups.begin(), groups.end());
    groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
    id.groups = std::move(groups);
    return id;
}

namespace {

Result<void> set_caps(CapSet caps) {
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    for (int i = 0; i < 2; ++i) {
        auto word = static_cast<uint32_t>(caps >> (32 * i));
        data[i] = {word, word, word};
    }
    if (::syscall(SYS_capset, &hdr, data) != 0) return sys_error("capset({:#x})", caps);
    return ok();
}

}  // namespace

Result<void> become_user(const Identity& who, CapSet keep) {
    if (who.uid == 0) return error_code(EPERM, "refusing to become uid 0 as 'the user'");
    if (::setgroups(who.groups.size(), who.groups.data()) != 0)
        return sys_error("setgroups for uid {}", who.uid);
    if (::setresgid(who.gid, who.gid, who.gid) != 0) return sys_error("setresgid({})", who.gid);
    // Capabilities survive the uid change only with KEEPCAPS; they are cut to `keep` at once.
    if (keep && ::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) return sys_error("prctl(PR_SET_KEEPCAPS)");
    if (::setresuid(who.uid, who.uid, who.uid) != 0) return sys_error("setresuid({})", who.uid);
    if (keep && ::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) return sys_error("prctl(PR_SET_KEEPCAPS, 0)");
    CKPT_TRY(set_caps(keep));
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0)
        return sys_error("prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
    for (int cap = 0; cap < 64; ++cap)
        if ((keep & cap_bit(cap)) &&
            ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, static_cast<unsigned long>(cap), 0, 0) != 0)
            return sys_error("prctl(PR_CAP_AMBIENT_RAISE, {})", cap);
    return verify_identity(who, keep);
}

Result<void> verify_identity(const Identity& who, CapSet caps) {
    std::string text = CKPT_TRY(read_file("/proc/thread-self/status"));
    bool seen_uid = false, seen_gid = false, seen_groups = false;
    int seen_caps = 0;
    for (std::string_view line : split(text, '\n')) {
        size_t colon = line.find(':');
        if (colon == std::string_view::npos) continue;
        std::string_view key = line.substr(0, colon), value = trim(line.substr(colon + 1));
        if (key == "Uid" || key == "Gid") {
            uint32_t want = key == "Uid" ? who.uid : who.gid;
            for (std::string_view v : split(value, '\t')) {
                auto n = parse_uint(trim(v));
                if (!n || *n != want)
                    return error_code(EPERM, "identity change failed: {} is '{}', expected {} everywhere",
                                      key, value, want);
            }
            (key == "Uid" ? seen_uid : seen_gid) = true;
        } else if (key == "Groups") {
            std::set<gid_t> have, want(who.groups.begin(), who.groups.end());
            for (std::string_view v : split(value, ' '))
                if (auto n = parse_uint(trim(v))) have.insert(static_cast<gid_t>(*n));
            if (have != want)
                return error_code(EPERM, "identity change failed: groups are '{}'", value);
            seen_groups = true;
        } else if (key == "CapInh" || key == "CapPrm" || key == "CapEff" || key == "CapAmb") {
            auto n = parse_uint(value, 16);
            if (!n || *n != caps)
                return error_code(EPERM, "identity change failed: {} is {}, expected {:016x}", key, value,
                                  caps);
            ++seen_caps;
        }
    }
    if (!seen_uid || !seen_gid || !seen_groups || seen_caps != 4)
        return error("identity check: /proc/thread-self/status lacks a field");
    return ok();
}

bool is_root() { return ::geteuid() == 0; }

int yama_ptrace_scope() {
    auto text = read_file("/proc/sys/kernel/yama/ptrace_scope");
    if (!text) return 0;
    auto n = parse_uint(trim(*text));
    return n ? static_cast<int>(*n) : 0;
}

}  // namespace ckpt::privilege
