#include "ckpt/slurm/submit_options.h"

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

}  // namespace ckpt::slurm
