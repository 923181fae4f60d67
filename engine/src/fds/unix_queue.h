// What is queued for an AF_UNIX socket, read as the dump reads it (socket.cpp): for
// tests/unit, which checks that the peek takes nothing out and leaves no fd in the engine.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "ckpt/base/result.h"

namespace ckpt::engine {

// Each entry queued for sock (a message, or a run of a stream's bytes) with its sender's pid
// as the engine sees it, where the receiver has SO_PASSCRED or SO_PASSPIDFD (else 0). fds in
// flight (SCM_RIGHTS on a seqpacket socket) are received and closed.
Result<std::vector<std::pair<std::string, pid_t>>> peek_unix_queue(int sock);

}  // namespace ckpt::engine
