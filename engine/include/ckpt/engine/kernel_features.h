// Probes of the kernel features the engine relies on, each tried for real on this
// machine (not inferred from the kernel version). `ckpt-engine check` prints them.
#pragma once

#include <string>
#include <vector>

namespace ckpt::engine {

struct FeatureProbe {
    std::string name;      // e.g. "pidfd_getfd"
    std::string purpose;   // what the engine uses it for
    bool required;         // dump/restore cannot work without it
    bool available;
    std::string detail;    // why it is missing, or what was found
};

std::vector<FeatureProbe> probe_kernel_features();

}  // namespace ckpt::engine
