// A shell job's terminal (--shell-job): recorded by no more than that, and bound at restore
// to the restoring shell's terminal. pty.cpp claims every terminal and hands it here when it
// is not a pty of the tree and the dump is of a shell job (refusing it otherwise).
#include <fcntl.h>
#include <unistd.h>

#include "ckpt/base/strings.h"
#include "fd_kind.h"
#include "restore_task.h"

namespace ckpt::engine {
namespace {

Result<void> dump_terminal(const FdProbe& probe, image::Fd* f) {
    CKPT_TRY(probe.refuse_async_external(*f));
    f->set_kind(image::Fd::TTY);
    f->set_external_key("tty");
    return ok();
}

// A shell job takes the restoring shell's terminal.
Result<void> restore_terminal(RestoreTask& t, const image::Fd& f) {
    UniqueFd opened;
    int source = -1;
    for (int std_fd : {f.fd(), 0, 1, 2})
        if (std_fd <= 2 && isatty(std_fd)) {
            source = std_fd;
            break;
        }
    if (source < 0) {
        opened = UniqueFd(open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC));
        if (!opened) return sys_error("shell job: the restorer has no terminal (open /dev/tty)");
        source = opened.get();
    }
    CKPT_TRY(t.install_fd(source, f.fd(), f.cloexec()));
    return ok();
}

}  // namespace

extern const FdKind kTerminalKind{
    .name = "terminal",
    .image_kind = image::Fd::TTY,
    .dump = dump_terminal,
    .restore = restore_terminal,
    .restorers_fd = true,
};

}  // namespace ckpt::engine
