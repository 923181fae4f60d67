// Result<T>: a value or an Error that says what failed (which pid, fd, syscall and errno).
//
// Every fallible function in ckpt returns one. Errors grow context as they travel up
// ("restore pid 42: fd 3: openat(/data/x): No such file or directory"), so the one line a
// user finally sees names the resource and the syscall. No exceptions cross component
// boundaries (SPANK and MPI are C).
#pragma once

#include <fmt/format.h>

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace ckpt {

class [[nodiscard]] Error {
public:
    Error(int code, std::string message) : code_(code), message_(std::move(message)) {}

    // errno-like code (0 when the failure has no errno, e.g. a corrupt image).
    int code() const { return code_; }
    const std::string& message() const { return message_; }

    // Prepends "<what>: " to the message; returns *this for chaining.
    Error& context(std::string_view what);
    template <typename... Args>
    Error& context(fmt::format_string<Args...> f, Args&&... args) {
        return context(std::string_view(fmt::format(f, std::forward<Args>(args)...)));
    }

private:
    int code_;
    std::string message_;
};

// An error from a failed system call: appends strerror(err) to the formatted text.
Error sys_error_code(int err, std::string what);
template <typename... Args>
Error sys_error(fmt::format_string<Args...> f, Args&&... args) {
    int saved = errno;  // formatting must not clobber it
    return sys_error_code(saved, fmt::format(f, std::forward<Args>(args)...));
}
// An error without errno (bad input, corrupt image, unsupported state).
template <typename... Args>
Error error(fmt::format_string<Args...> f, Args&&... args) {
    return Error(0, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
Error error_code(int code, fmt::format_string<Args...> f, Args&&... args) {
    return Error(code, fmt::format(f, std::forward<Args>(args)...));
}

template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
    Result(Error err) : v_(std::in_place_index<1>, std::move(err)) {}

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() & { return std::get<0>(v_); }
    const T& value() const& { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

    const Error& error() const& { return std::get<1>(v_); }
    Error&& error() && { return std::get<1>(std::move(v_)); }

    // Adds context to the error, if any, and passes the result on.
    template <typename... Args>
    Result&& context(fmt::format_string<Args...> f, Args&&... args) && {
        if (!ok()) std::get<1>(v_).context(fmt::format(f, std::forward<Args>(args)...));
        return std::move(*this);
    }

private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error err) : err_(std::move(err)), failed_(true) {}

    bool ok() const { return !failed_; }
    explicit operator bool() const { return ok(); }
    void value() const {}

    const Error& error() const& { return err_; }
    Error&& error() && { return std::move(err_); }

    template <typename... Args>
    Result&& context(fmt::format_string<Args...> f, Args&&... args) && {
        if (failed_) err_.context(fmt::format(f, std::forward<Args>(args)...));
        return std::move(*this);
    }

private:
    Error err_{0, {}};
    bool failed_ = false;
};

inline Result<void> ok() { return {}; }

}  // namespace ckpt

// CKPT_TRY(expr): evaluates a Result; on error returns the error from the enclosing
// function, otherwise yields the value. (A GNU statement expression: g++ and clang.)
#define CKPT_TRY(expr)                                            \
    ({                                                            \
        auto&& ckpt_try_r_ = (expr);                              \
        if (!ckpt_try_r_.ok()) return std::move(ckpt_try_r_).error(); \
        std::move(ckpt_try_r_).value();                           \
    })

// CKPT_TRY_CTX(expr, fmt, args...): as CKPT_TRY, adding context to the error.
#define CKPT_TRY_CTX(expr, ...)                                                   \
    ({                                                                            \
        auto&& ckpt_try_r_ = (expr);                                              \
        if (!ckpt_try_r_.ok()) {                                                  \
            ::ckpt::Error ckpt_try_e_ = std::move(ckpt_try_r_).error();           \
            ckpt_try_e_.context(__VA_ARGS__);                                     \
            return ckpt_try_e_;                                                   \
        }                                                                         \
        std::move(ckpt_try_r_).value();                                           \
    })
