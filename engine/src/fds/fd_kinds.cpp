// Every fd kind the engine knows, once. The dump offers an fd to them in this order (the
// first whose claims() takes its /proc link records it); the restore finds a kind by the
// image kind it recorded.
#include "fd_kind.h"

namespace ckpt::engine {

extern const FdKind kPipeKind, kFifoKind, kPtyKind, kInotifyKind, kFanotifyKind, kTerminalKind, kTcpKind, kInetDgramKind, kNetlinkKind, kSocketKind, kUnixSkKind, kEventFdKind, kTimerFdKind, kSignalFdKind, kEpollKind,
    kPidFdKind, kRegularFileKind, kExternalKind;

const std::vector<const FdKind*>& fd_kinds() {
    // Terminals and FIFOs before regular files: all are paths. TCP sockets before the others,
    // then the other AF_INET/AF_INET6 ones and netlink ones (the socket kind takes the rest).
    static const std::vector<const FdKind*> kinds{&kPipeKind,    &kFifoKind,      &kPtyKind, &kTerminalKind,  &kTcpKind, &kInetDgramKind, &kNetlinkKind, &kSocketKind,
                                                  &kUnixSkKind,
                                                  &kEventFdKind, &kTimerFdKind,   &kSignalFdKind,
                                                  &kEpollKind,   &kPidFdKind,     &kInotifyKind,     &kFanotifyKind,    &kRegularFileKind,
                                                  &kExternalKind};
    return kinds;
}

Result<void> finish_fd_dump(FdDumpState& state) {
    for (const FdKind* k : fd_kinds())
        if (k->finish_dump) CKPT_TRY_CTX(k->finish_dump(state), "{} fds", k->name);
    return ok();
}

Result<void> prepare_fd_restore(RestoreShared& shared) {
    for (const FdKind* k : fd_kinds())
        if (k->prepare_restore) CKPT_TRY_CTX(k->prepare_restore(shared), "{} fds", k->name);
    return ok();
}

Result<void> tree_made_fd_restore(RestoreShared& shared) {
    for (const FdKind* k : fd_kinds())
        if (k->tree_made) CKPT_TRY_CTX(k->tree_made(shared), "{} fds", k->name);
    return ok();
}

Result<void> finish_fd_restore(RestoreShared& shared) {
    for (const FdKind* k : fd_kinds())
        if (k->finish_restore) CKPT_TRY_CTX(k->finish_restore(shared), "{} fds", k->name);
    return ok();
}

}  // namespace ckpt::engine
