// System V IPC (shared memory, semaphores, message queues) of a tree that lives in an IPC
// namespace of its own (`unshare -i`): every object of that namespace recorded at dump
// (ipc.img) and made again, with its id, in a new namespace for the restored tree. Objects of
// the engine's own (the host's) namespace are shared with unknown others and their ids cannot
// be chosen: a tree there gets nothing recorded, and an attached segment is refused by
// memory.cpp.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"
#include "dump_context.h"
#include "ipc.pb.h"
#include "mm.pb.h"

namespace ckpt::engine {

class RemoteThread;

// Dump, on the frozen tree (parents first, the root first): false when the root is in the
// engine's IPC namespace. Otherwise every live thread of the tree must be in the root's
// namespace and no process outside the tree in it, no thread may hold semaphore undo
// adjustments (SEM_UNDO), every attachment of a segment must be whole and by the tree; then
// every object and the namespace's sysctls are read (by a thread of the engine that enters the
// namespace with setns, which needs CAP_SYS_ADMIN) into out.
Result<bool> dump_ipc_namespace(const std::vector<FrozenProcess>& procs, image::IpcNamespace* out);

// Restore: refuses a forged or inconsistent image (ids, sizes, counts, contents bounded).
Result<void> check_ipc_image(const image::IpcNamespace& ns, const std::string& where);
// Refuses a mapping recorded as a segment attachment that the image cannot restore: no
// ipc.img (ns null), no such segment, or not the whole segment.
Result<void> check_shm_attachment(const image::IpcNamespace* ns, const image::Vma& v, const std::string& where);

// The restored tree's IPC namespace: the root (stopped, as the engine made it) unshares its
// IPC namespace, then the engine fills it (create); every process inherits it and attaches
// its segments when its memory is restored (memory.cpp); finish() once all are attached.
class IpcRestore {
public:
    IpcRestore() = default;
    IpcRestore(IpcRestore&& o) noexcept : ns_(std::move(o.ns_)), img_(o.img_), held_(std::move(o.held_)) { o.held_.clear(); }
    IpcRestore& operator=(IpcRestore&&) = delete;
    ~IpcRestore();
    static Result<IpcRestore> create(RemoteThread& root, pid_t host, const image::IpcNamespace& ns);
    // Segments marked for destruction are removed (they stay while attached), and the
    // namespace's sysctls are set as recorded.
    Result<void> finish();

private:
    UniqueFd ns_;  // /proc/ROOT/ns/ipc
    const image::IpcNamespace* img_ = nullptr;
    std::vector<void*> held_;  // the engine's attachments of segments marked for destruction
};

}  // namespace ckpt::engine
