#!/usr/bin/env bash
# Checkpoint overhead (max_overhead=1 on the nodes, full_every=1): a job asking for a set
# every second, whose full sets (32 MiB, incr_job) each keep it busy a few hundred ms, gets
# far fewer sets than that: after each set the agent waits 99 times what the set cost before
# the next, and says so in its log. Checked from the index: the next set begins no earlier
# than the log said, so checkpoints take at most 1 % of the job's time.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
script=$(dirname "$SERIAL_JOB")/serial-job.sbatch
INCR_JOB=$(stage "${6:?usage: $0 CLUSTER SERIAL_JOB CKPT_JOB CKPT_ENGINE IMAGE_CLAIM INCR_JOB}")
with_plugin_args max_overhead=1 full_every=1

job=$(submit "$work" --export=ALL,SERIAL_JOB="$INCR_JOB" --checkpoint-interval=1s --checkpoint-keep=5 \
    "$script" 100000 50)
first=$(wait_for_set "$job" 0 60)
second=$(wait_for_set "$job" "$first" 180)
scancel "$job"
log=$CKPT_ROOT/$job/agents/step-batch.node-0.log
# "set 1 kept the job busy 230 ms: the next set in 23 s, not 1 s (max_overhead=1%)"
paced=$(sed -n "s/.*set $first kept the job busy \([0-9]*\) ms: the next set in \([0-9]*\) s, not .*(max_overhead=1%)\$/\1 \2/p" "$log")
[ -n "$paced" ] || fail "job $job: set $first did not postpone the next: $(grep -E 'set|busy' "$log" | tail -8)"
read -r cost pause <<<"$paced"
((pause * 1000 >= cost * 99)) || fail "job $job: set $first cost $cost ms, the next set only $pause s later"
times=$(set_fields "$job" seq start_time_ns end_time_ns)
end1=$(awk -v s="$first" '$1 == s { print $3 }' <<<"$times")
start2=$(awk -v s="$second" '$1 == s { print $2 }' <<<"$times")
# The agent counts whole seconds: the next set may begin up to 1 s before END + PAUSE.
gap_ms=$(((start2 - end1) / 1000000))
((gap_ms >= (pause - 1) * 1000)) ||
    fail "job $job: set $second began $gap_ms ms after set $first ended, not after ${pause} s: $times"
note "job $job: set $first kept the job busy $cost ms; set $second began $gap_ms ms after it (interval 1 s)"
