#!/usr/bin/env bash
# Checkpoint before the end: a job submitted with --time=1 --signal=USR1@45 and a long
# interval. When slurmctld sends the warning signal to the job's steps (15 to 45 s in,
# depending on its periodic check), the step's agents receive it too and the lead takes a
# set with trigger "preempt", which verifies. The computation ignores the signal. Then the
# same through the batch step's relay (scancel --batch --signal=USR1).
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
script=$(dirname "$SERIAL_JOB")/srun-job.sbatch

job=$(submit "$work" --time=1 --signal=USR1@45 --export=ALL,SERIAL_JOB="$SERIAL_JOB" \
    --checkpoint-interval=10m "$script" 3000 50)
deadline=$((SECONDS + 75))
until "$CKPT_JOB" list "$job" --root "$CKPT_ROOT" 2>/dev/null | grep -E '^\* +[0-9]+ +committed +preempt' >/dev/null; do
    ((SECONDS < deadline)) || fail "job $job: no final set after the warning signal: $("$CKPT_JOB" list "$job" --root "$CKPT_ROOT" 2>&1); $(cat "$CKPT_ROOT/$job"/agents/step-1.node-0.log 2>&1 | tail -3)"
    pause
done
seq=$(current_set "$job")
ckpt_job_in "$work" verify "$job" --set "$seq" || fail "the final set $seq does not verify"
grep -q "signalled by Slurm" "$CKPT_ROOT/$job/agents/step-1.node-0.log" || fail "the lead's log does not say why"
[ "$(job_field "$job" JobState)" = RUNNING ] || fail "job $job: $(job_field "$job" JobState) after the warning"
# The batch script's warning (what --signal=B:USR1 sends): the batch step's relay has the
# srun step's lead take the final set, then passes the signal on (the shell dies of it).
scancel --batch --signal=USR1 "$job"
seq2=$(wait_for_set "$job" "$seq" 30)
"$CKPT_JOB" list "$job" --root "$CKPT_ROOT" | grep -E "^\* +$seq2 +committed +preempt" >/dev/null ||
    fail "set $seq2 is not a final set: $("$CKPT_JOB" list "$job" --root "$CKPT_ROOT")"
wait_for_line "$CKPT_ROOT/$job/agents/step-batch.node-0.log" "relay: final checkpoint: set $seq2 committed" 10
scancel "$job"
wait_jobs_done "$job"
no_agent_left "$job"
note "ok (final set $seq taken on Slurm's warning signal)"
