#include "ckpt/base/strings.h"

#include <charconv>

namespace ckpt {

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    size_t start = 0;
    for (;;) {
        size_t pos = s.find(sep, start);
        if (pos == std::string_view::npos) {
            out.push_back(s.substr(start));
            return out;
        }
        out.push_back(s.substr(start, pos - start));
        start = pos + 1;
    }
}

std::string_view trim(std::string_view s) {
    const char* ws = " \t\n\r";
    size_t b = s.find_first_not_of(ws);
    if (b == std::string_view::npos) return {};
    size_t e = s.find_last_not_of(ws);
    return s.substr(b, e - b + 1);
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

template <typename T>
static Result<T> parse_number(std::string_view s, int base) {
    T v{};
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size())
        return error_code(EINVAL, "'{}' is not a valid number", s);
    return v;
}

Result<int64_t> parse_int(std::string_view s, int base) { return parse_number<int64_t>(s, base); }
Result<uint64_t> parse_uint(std::string_view s, int base) { return parse_number<uint64_t>(s, base); }

}  // namespace ckpt
