#include "ckpt/base/result.h"

#include <cstring>

namespace ckpt {

Error& Error::context(std::string_view what) {
    std::string m;
    m.reserve(what.size() + 2 + message_.size());
    m.append(what).append(": ").append(message_);
    message_ = std::move(m);
    return *this;
}

Error sys_error_code(int err, std::string what) {
    what.append(": ").append(std::strerror(err));
    return Error(err, std::move(what));
}

}  // namespace ckpt
