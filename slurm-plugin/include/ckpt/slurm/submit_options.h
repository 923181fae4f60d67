// The saved sbatch options of a job (index attribute submit_options): words joined by
// spaces, each with '%' and ' ' escaped as %25 and %20, the script's arguments after "--".
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ckpt::slurm {

std::string join_submit_words(const std::vector<std::string>& words);
std::vector<std::string> split_submit_words(std::string_view text);

}  // namespace ckpt::slurm
