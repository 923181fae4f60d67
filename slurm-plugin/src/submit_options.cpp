#include "ckpt/slurm/submit_options.h"

#include <sys/random.h>

#include <fmt/format.h>
#include <xxhash.h>

#include <set>

#include "ckpt/slurm/options.h"

namespace ckpt::slurm {

std::string join_submit_words(const std::vector<std::string>& words) {
    std::string out;
    for (const std::string& w : words) {
        if (!out.empty()) out += ' ';
        for (char c : w) {
            if (c == '%')
                out += "%25";
            else if (c == ' ')
                out += "%20";
            else
                out += c;
        }
    }
    return out;
}

std::vector<std::string> split_submit_words(std::string_view text) {
    std::vector<std::string> words;
    std::string cur;
    bool any = false;
    for (size_t i = 0; i <= text.size(); ++i) {
        if (i == text.size() || text[i] == ' ') {
            if (any) words.push_back(cur);
            cur.clear();
            any = false;
        } else if (text.substr(i, 3) == "%25") {
            cur += '%', i += 2, any = true;
        } else if (text.substr(i, 3) == "%20") {
            cur += ' ', i += 2, any = true;
        } else {
            cur += text[i], any = true;
        }
    }
    return words;
}

std::string environment_to_save(const std::vector<std::string>& env) {
    // The plugin's own variables, by asking for every one of them.
    JobSettings all;
    all.active = true;
    all.restore = RestoreRequest{};
    std::set<std::string, std::less<>> plugin_vars;
    for (const auto& [name, value] : job_environment(all)) plugin_vars.insert(name);
    std::string out;
    for (std::string_view entry : env) {
        size_t eq = entry.find('=');
        if (eq == 0 || eq == std::string_view::npos) continue;
        std::string_view name = entry.substr(0, eq);
        if (name.starts_with("SLURM_") || name.starts_with("SLURMD_") ||
            name.starts_with("_SLURM_SPANK_OPTION_") || plugin_vars.contains(name))
            continue;
        out.append(entry);
        out += '\0';
    }
    return out;
}

std::string step_command(const std::vector<std::string>& argv) {
    std::string joined;
    for (const std::string& a : argv) joined.append(a).push_back('\0');
    return fmt::format("{:016x}", XXH3_64bits(joined.data(), joined.size()));
}

std::string option_variable(std::string_view option) {
    std::string name = "_SLURM_SPANK_OPTION_ckpt_";
    for (char c : option) name += c == '-' ? '_' : c;
    return name;
}

Result<std::string> new_incarnation() {
    unsigned char bytes[16];
    if (::getrandom(bytes, sizeof bytes, 0) != static_cast<ssize_t>(sizeof bytes))
        return sys_error("getrandom");
    std::string id;
    for (unsigned char b : bytes) id += fmt::format("{:02x}", b);
    return id;
}

}  // namespace ckpt::slurm
