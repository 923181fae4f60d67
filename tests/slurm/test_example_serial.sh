#!/usr/bin/env bash
# examples/serial-job through sbatch as the test user: the job sees its checkpoint interval
# and writes the same answer as the program run directly.
. "$(dirname "$0")/lib.sh"
[ -n "$SERIAL_JOB" ] || fail "usage: $0 CLUSTER_DIR SERIAL_JOB_PROGRAM"
program=$SERIAL_JOB  # the copy lib.sh staged where the test user can run it
script=$(dirname "$program")/serial-job.sbatch
work=$(user_scratch)

"$program" 50 0 "$work/expected.txt" >/dev/null
job=$(submit "$work" --export=ALL,SERIAL_JOB="$program" "$script" 50 20)
wait_jobs_done "$job"
[ "$(job_field "$job" JobState)" = COMPLETED ] || fail "job $job: $(job_field "$job" JobState): $(cat "$work/serial-job-$job.out")"
grep -q "run 0 on n[0-9], checkpoint interval 30 s" "$work/serial-job-$job.out" ||
    fail "job output lacks the interval: $(cat "$work/serial-job-$job.out")"
cmp "$work/expected.txt" "$work/answer-$job.txt" || fail "answers differ"
note "ok"
