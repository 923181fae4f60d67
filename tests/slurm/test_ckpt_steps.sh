#!/usr/bin/env bash
# One srun step of a job is checkpointed at a time: a script that starts two srun steps at
# once (one task each) gets sets of the step whose lead agent took the job's steps lock
# first; the other step's lead leaves the job's store alone, says so in its log and in
# `ckpt-job status`, and its step runs to the end without checkpoints. No set of the first
# step is failed or removed by the second, and both steps finish with their answers.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
cat >"$work/two-steps.sbatch" <<'SCRIPT'
#!/bin/bash
#SBATCH --open-mode=append
srun --mpi=none -N1 -n1 --label "$SERIAL_JOB" "$1" "$2" "answer-$SLURM_JOB_ID-a.txt" &
srun --mpi=none -N1 -n1 --label "$SERIAL_JOB" "$1" "$2" "answer-$SLURM_JOB_ID-b.txt" &
wait
echo "both steps done"
SCRIPT
chmod +x "$work/two-steps.sbatch"
chown "$TEST_USER:$TEST_USER" "$work/two-steps.sbatch"

"$SERIAL_JOB" 300 0 "$work/expected.txt" >/dev/null
job=$(submit "$work" -N2 -o "$work/two-steps-%j.out" --export=ALL,SERIAL_JOB="$SERIAL_JOB" \
    --checkpoint-interval=2s "$work/two-steps.sbatch" 300 50)
out=$work/two-steps-$job.out
seq=$(wait_for_set "$job" 0 40)
logs=$CKPT_ROOT/$job/agents
deadline=$((SECONDS + 20))
until passive=$(grep -l "not checkpointed: another srun step of this job is checkpointed" "$logs"/step-[01].node-0.log 2>/dev/null); do
    ((SECONDS < deadline)) || fail "no step's agent says it is not checkpointed: $(tail -n3 "$logs"/step-*.log 2>&1)"
    pause
done
passive_step=$(basename "$passive" .node-0.log)
passive_step=${passive_step#step-}
active_step=$((1 - passive_step))
ckpt_job_in "$work" status "$job" | grep "last result: not checkpointed: another srun step" >/dev/null ||
    fail "ckpt-job status does not say so: $(ckpt_job_in "$work" status "$job")"
JOB_TIMEOUT=90 wait_jobs_done "$job"
[ "$(job_field "$job" JobState)" = COMPLETED ] || fail "job $job: $(job_field "$job" JobState): $(cat "$out")"
grep -q "^both steps done" "$out" || fail "the script did not finish: $(grep -v ': step' "$out")"
for t in a b; do
    cmp -s "$work/expected.txt" "$work/answer-$job-$t.txt" || fail "answer $t differs"
done
sets=$("$CKPT_JOB" list "$job" --root "$CKPT_ROOT" --json)
python3 - "$sets" "$active_step" <<'PY' || fail "a set is not the checkpointed step's, or failed: $sets"
import json, sys
doc = json.loads(sys.argv[1])
sets = doc["sets"]
assert any(s["state"] == "committed" for s in sets), "no committed set"
for s in sets:
    assert s["step_id"] == int(sys.argv[2]), s
    # Only the end of the step may cut a set short, never the other step's agents.
    assert s["state"] == "committed" or "step ended" in s.get("failure", ""), s
PY
no_agent_left "$job"
note "ok (step $active_step checkpointed, step $passive_step ran without; set $seq and later intact)"
