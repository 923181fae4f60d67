// Sockets: not supported yet, except as fds 0-2 (a service's stdio connected to a socket),
// which are external resources bound at restore to the restorer's own.
#include "ckpt/base/strings.h"
#include "fd_kind.h"

namespace ckpt::engine {
namespace {

bool claims_socket(const FdProbe& probe) { return starts_with(probe.link, "socket:["); }

Result<void> dump_socket(const FdProbe& probe, image::Fd* f) {
    if (probe.fd > 2)
        return error_code(ENOTSUP, "unsupported fd kind: socket (sockets come with the next engine release)");
    CKPT_TRY(probe.refuse_async_external(*f));
    f->set_kind(image::Fd::EXTERNAL);
    f->set_external_key(probe.link);
    return ok();
}

}  // namespace

// Records no kind of its own yet: restored by the external kind.
extern const FdKind kSocketKind{
    .name = "socket",
    .image_kind = image::Fd::EXTERNAL,
    .claims = claims_socket,
    .dump = dump_socket,
};

}  // namespace ckpt::engine
