#!/usr/bin/env bash
# Checkpoint before the end, for a job whose batch script computes itself: submitted with
# --time=2 --signal=B:USR1@100, Slurm sends SIGUSR1 to the batch step's task only (20 to
# 50 s in). That task is ckpt's relay: it has the lead agent take a final set (trigger
# preempt) and only then passes the signal on to the script, whose trap sees the committed
# set. The job is cancelled; `ckpt-job restore` resumes it from the final set (through the
# relay and the engine's restore) and it writes the uninterrupted run's answer.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
cat >"$work/warned.sbatch" <<'SCRIPT'
#!/bin/bash
#SBATCH --open-mode=append
# The warning's trap reports what the checkpoint index says at that moment.
trap 'echo "script got USR1; sets: $("$CKPT_JOB" list "$SLURM_JOB_ID" | grep -cE "committed +preempt") preempt"' USR1
echo "job $SLURM_JOB_ID run ${SLURM_RESTART_COUNT:-0} on $SLURMD_NODENAME"
"$SERIAL_JOB" "$1" "$2" "answer-$SLURM_JOB_ID.txt" &
child=$!
# wait returns early for each trapped signal; the program goes on.
until wait "$child"; do kill -0 "$child" 2>/dev/null || exit 1; done
SCRIPT
chmod +x "$work/warned.sbatch"
chown "$TEST_USER:$TEST_USER" "$work/warned.sbatch"

"$SERIAL_JOB" 1200 0 "$work/expected.txt" >/dev/null
job=$(submit "$work" --time=2 --signal=B:USR1@100 -o "$work/warned-%j.out" \
    --export=ALL,SERIAL_JOB="$SERIAL_JOB",CKPT_JOB="$CKPT_JOB",CKPT_ROOT="$CKPT_ROOT" \
    --checkpoint-interval=10m "$work/warned.sbatch" 1200 50)
out=$work/warned-$job.out
log=$CKPT_ROOT/$job/agents/step-batch.node-0.log
deadline=$((SECONDS + 75))
until grep -q "script got USR1" "$out" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "job $job: the script saw no warning signal: $(cat "$out" 2>&1); $(tail -5 "$log" 2>&1)"
    pause
done
grep -q "script got USR1; sets: 1 preempt" "$out" ||
    fail "the script saw the signal before the final set was committed: $(cat "$out")"
seq=$(current_set "$job")
"$CKPT_JOB" list "$job" --root "$CKPT_ROOT" | grep -E "^\* +$seq +committed +preempt" >/dev/null ||
    fail "set $seq is not the final set: $("$CKPT_JOB" list "$job" --root "$CKPT_ROOT")"
grep -q "relay: final checkpoint: set $seq committed; passing the signal on" "$log" ||
    fail "the relay's log does not say it: $(cat "$log")"
[ "$(job_field "$job" JobState)" = RUNNING ] || fail "job $job: $(job_field "$job" JobState) after the warning"
scancel "$job"
wait_jobs_done "$job"
no_agent_left "$job"

new=$(ckpt_job_in "$work" restore "$job" --set "$seq") || fail "ckpt-job restore failed: $new"
note "job $job (final set $seq) restored as job $new"
JOB_TIMEOUT=120 wait_jobs_done "$new"
[ "$(job_field "$new" JobState)" = COMPLETED ] ||
    fail "job $new: $(job_field "$new" JobState): $(cat "$work/warned-$new.out" 2>&1)"
cat "$out" "$work/warned-$new.out" >"$work/both.out"
check_resumed_output "$work/both.out" "$work/answer-$job.txt" "$work/expected.txt"
no_agent_left "$new"
note "ok (final set $seq taken before the script saw Slurm's B: warning)"
