// External resources: an fd whose other side is outside the tree (a pipe to the runner, the
// restorer's stdio, a resource the caller names with --external-fd). Recorded by a key and
// bound at restore to the restorer's fd given for that key (--inherit-fd fd[N]:KEY); fds 0-2
// default to the restorer's own.
#include "ckpt/base/strings.h"
#include "fd_kind.h"
#include "restore_task.h"

namespace ckpt::engine {
namespace {

Result<void> restore_external(RestoreTask& t, const image::Fd& f) {
    int source = -1;
    auto it = t.shared->inherited.find(f.external_key());
    if (it != t.shared->inherited.end()) source = it->second;
    else if (f.fd() <= 2) source = f.fd();  // the restorer's own stdin, stdout, stderr
    if (source < 0)
        return error("external resource {} needs --inherit-fd fd[N]:{}", f.external_key(), f.external_key());
    CKPT_TRY(t.install_fd(source, f.fd(), f.cloexec()));
    return ok();
}

}  // namespace

// Claims no fd by its link: the fd table and other kinds record fds as EXTERNAL.
extern const FdKind kExternalKind{
    .name = "external",
    .image_kind = image::Fd::EXTERNAL,
    .restore = restore_external,
    .restorers_fd = true,
};

}  // namespace ckpt::engine
