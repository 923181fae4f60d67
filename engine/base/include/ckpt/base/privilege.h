// Changing identity: how root code becomes the user whose data it is about to touch
// (docs/security.md). Every process of ckpt that reads or writes a user's checkpoint data
// calls become_user first, so the kernel, not our checks, limits what forged data can do.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "ckpt/base/result.h"

namespace ckpt::privilege {

// Who a user is: uid, primary gid and supplementary groups.
struct Identity {
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;
};

// The user's identity from the user database (getpwuid, getgrouplist), with gid as the
// primary group (a batch system may give a job another primary group than the database).
Result<Identity> user_identity(uid_t uid, gid_t gid);

// A set of capabilities (bit n = capability n).
using CapSet = uint64_t;
constexpr CapSet cap_bit(int cap) { return CapSet{1} << cap; }

// Becomes `who` for good: groups, real/effective/saved/fs gids and uids. Every capability
// is dropped but `keep`, which stays permitted, effective, inheritable and ambient, so that
// a program exec'd next keeps exactly these (and nothing else) as the user. The process
// becomes non-dumpable (the kernel does so on any identity change), so the user cannot
// ptrace it while it holds capabilities. The result is verified from /proc: an identity
// change that did not happen is an error, never a silent root.
// Needs root (CAP_SETUID, CAP_SETGID, CAP_SETPCAP); call it single-threaded.
Result<void> become_user(const Identity& who, CapSet keep = 0);

// Checks the calling thread's credentials from /proc/thread-self/status: every uid and gid
// is who's, the groups are exactly who's, and permitted, effective, inheritable and ambient
// capabilities are exactly `caps`.
Result<void> verify_identity(const Identity& who, CapSet caps);

// True when the process runs as root (effective uid 0).
bool is_root();

// Yama's ptrace_scope (0 when Yama is absent): at 1 and above, tracing a process that is
// not a descendant needs CAP_SYS_PTRACE.
int yama_ptrace_scope();

}  // namespace ckpt::privilege
