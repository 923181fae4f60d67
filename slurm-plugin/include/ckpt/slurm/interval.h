// --checkpoint-interval values: Slurm's time grammar plus unit suffixes.
//
//   30          minutes (a bare number, as Slurm's --time)
//   10:30       minutes:seconds
//   1:00:00     hours:minutes:seconds
//   2-12        days-hours            2-12:30  days-hours:minutes   2-12:30:15  days-hours:minutes:seconds
//   30s 10m 2h 1d   a number with a unit
//   0           checkpointing off
#pragma once

#include <cstdint>
#include <string_view>

#include "ckpt/base/result.h"

namespace ckpt::slurm {

// Seconds; 0 means off. The error text lists the valid forms.
Result<uint64_t> parse_interval(std::string_view text);

// The valid forms, for error messages and --help.
extern const char kIntervalForms[];

// max_overhead= (percent of a job's time its checkpoints may take): after a set that kept
// the job busy for cost_ms, the next interval set waits at least this long after its end
// (cost x (100 - percent) / percent, rounded up); 100 or more: no wait.
uint64_t overhead_pause_ms(uint64_t cost_ms, uint32_t max_overhead_percent);

}  // namespace ckpt::slurm
