#include "ckpt/slurm/interval.h"

#include <limits>
#include <vector>

#include "ckpt/base/strings.h"

namespace ckpt::slurm {

const char kIntervalForms[] =
    "MIN, MIN:SEC, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, or a number with a unit (30s, 10m, 2h, 1d); 0 is off";

namespace {

constexpr uint64_t kMaxSeconds = 365ull * 24 * 3600;  // a year: anything longer is a typo

Result<uint64_t> field(std::string_view s, std::string_view whole) {
    if (s.empty() || s.find_first_not_of("0123456789") != std::string_view::npos || s.size() > 9)
        return error_code(EINVAL, "invalid checkpoint interval '{}': expected {}", whole, kIntervalForms);
    return parse_uint(s).value();
}

}  // namespace

uint64_t overhead_pause_ms(uint64_t cost_ms, uint32_t max_overhead_percent) {
    if (max_overhead_percent == 0 || max_overhead_percent >= 100) return 0;
    // A set never takes years: the product stays far below 2^64.
    return (cost_ms * (100 - max_overhead_percent) + max_overhead_percent - 1) / max_overhead_percent;
}

Result<uint64_t> parse_interval(std::string_view text) {
    std::string_view t = trim(text);
    auto bad = [&] { return error_code(EINVAL, "invalid checkpoint interval '{}': expected {}", text, kIntervalForms); };
    if (t.empty()) return bad();

    uint64_t seconds = 0;
    char unit = t.back();
    if (unit == 's' || unit == 'm' || unit == 'h' || unit == 'd') {
        uint64_t n = CKPT_TRY(field(t.substr(0, t.size() - 1), text));
        uint64_t mult = unit == 's' ? 1 : unit == 'm' ? 60 : unit == 'h' ? 3600 : 86400;
        seconds = n * mult;
    } else {
        uint64_t days = 0;
        std::string_view clock = t;
        size_t dash = t.find('-');
        bool has_days = dash != std::string_view::npos;
        if (has_days) {
            days = CKPT_TRY(field(t.substr(0, dash), text));
            clock = t.substr(dash + 1);
        }
        auto parts = split(clock, ':');
        if (parts.size() > 3) return bad();
        std::vector<uint64_t> v;
        for (auto p : parts) v.push_back(CKPT_TRY(field(p, text)));
        if (has_days) {
            // D-HH, D-HH:MM, D-HH:MM:SS
            uint64_t h = v[0], m = v.size() > 1 ? v[1] : 0, s = v.size() > 2 ? v[2] : 0;
            if (v.size() > 1 && m >= 60) return bad();
            if (v.size() > 2 && s >= 60) return bad();
            seconds = days * 86400 + h * 3600 + m * 60 + s;
        } else if (v.size() == 1) {
            seconds = v[0] * 60;  // bare number: minutes
        } else if (v.size() == 2) {
            if (v[1] >= 60) return bad();
            seconds = v[0] * 60 + v[1];  // MM:SS
        } else {
            if (v[1] >= 60 || v[2] >= 60) return bad();
            seconds = v[0] * 3600 + v[1] * 60 + v[2];
        }
    }
    if (seconds > kMaxSeconds)
        return error_code(EINVAL, "invalid checkpoint interval '{}': longer than a year", text);
    return seconds;
}

}  // namespace ckpt::slurm
