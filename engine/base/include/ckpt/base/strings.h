// Small parsing helpers for /proc files and command lines.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ckpt/base/result.h"

namespace ckpt {

std::vector<std::string_view> split(std::string_view s, char sep);
std::string_view trim(std::string_view s);
bool starts_with(std::string_view s, std::string_view prefix);
// Whole-string integer parse in the given base; an error names what was parsed.
Result<int64_t> parse_int(std::string_view s, int base = 10);
Result<uint64_t> parse_uint(std::string_view s, int base = 10);

}  // namespace ckpt
