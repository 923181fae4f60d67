#!/usr/bin/env bash
# On demand and after the end: `ckpt-job checkpoint --wait` takes a set now (trigger
# manual) and prints its number; `ckpt-job status` shows the agent; the job is cancelled;
# `ckpt-job restore` submits it again and the new job resumes from that set and writes the
# uninterrupted run's answer. No agent or engine process is left behind, after the
# cancelled job, the restored one, and a job that fails.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
script=$(dirname "$SERIAL_JOB")/serial-job.sbatch

"$SERIAL_JOB" 400 0 "$work/expected.txt" >/dev/null
job=$(submit "$work" --export=ALL,SERIAL_JOB="$SERIAL_JOB" --checkpoint-interval=10m "$script" 400 40)
out=$work/serial-job-$job.out
wait_for_line "$out" '^step 30 of' 30
seq=$(ckpt_job_in "$work" checkpoint "$job" --wait) || fail "ckpt-job checkpoint --wait failed: $seq"
note "job $job: set $seq committed on demand"
ckpt_job_in "$work" list "$job" | grep -E "^\* +$seq +committed +manual" >/dev/null ||
    fail "set $seq is not the current manual set: $(ckpt_job_in "$work" list "$job")"
status=$(ckpt_job_in "$work" status "$job") || fail "ckpt-job status failed: $status"
grep -q "agent running" <<<"$status" && grep -q "interval: 600 s" <<<"$status" &&
    grep -q "last set: $seq (manual" <<<"$status" || fail "unexpected status: $status"

scancel "$job"
wait_jobs_done "$job"
[ "$(job_field "$job" JobState)" = CANCELLED ] || fail "job $job: $(job_field "$job" JobState)"
no_agent_left "$job"

# With nothing open above stdio, as from a login shell: the environment file ckpt-job hands
# to sbatch as fd 3 is then created as fd 3 itself.
new=$(ckpt_job_in "$work" restore "$job" 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-) ||
    fail "ckpt-job restore failed: $new"
[[ $new =~ ^[0-9]+$ ]] || fail "ckpt-job restore printed '$new', not a job id"
note "job $job restored as job $new"
JOB_TIMEOUT=90 wait_jobs_done "$new"
# The new job kept the original interval (10m), which slurmctld does not know.
grep -q "interval 600 s" "$CKPT_ROOT/$new/agents/step-batch.node-0.log" ||
    fail "job $new lost the interval: $(head -2 "$CKPT_ROOT/$new/agents/step-batch.node-0.log")"
[ "$(job_field "$new" JobState)" = COMPLETED ] ||
    fail "job $new: $(job_field "$new" JobState): $(cat "$work/serial-job-$new.out" 2>&1)"
grep -q "job $job checkpoint set $seq: restoring from" "$work/serial-job-$new.out" ||
    fail "job $new did not restore set $seq: $(cat "$work/serial-job-$new.out")"
cat "$out" "$work/serial-job-$new.out" >"$work/both.out"
check_resumed_output "$work/both.out" "$work/answer-$job.txt" "$work/expected.txt"
no_agent_left "$new"

# A job that fails leaves nothing behind either.
failing=$(submit "$work" --checkpoint-interval=1s -o "$work/failing.out" --wrap 'sleep 4; exit 3')
wait_for_set "$failing" 0 20 >/dev/null
wait_jobs_done "$failing"
[ "$(job_field "$failing" JobState)" = FAILED ] || fail "job $failing: $(job_field "$failing" JobState)"
no_agent_left "$failing"
note "ok"
