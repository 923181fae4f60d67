#!/usr/bin/env bash
# A re-run script that numbers its steps differently: after the requeue the script runs an
# extra srun step first, so the computation that was checkpointed as step 0 is now step 1.
# The restart matches steps by what they run: the new step 0 (`true`) starts normally (it
# is not given the computation's images), and step 1 resumes the computation from the set,
# which ends with the uninterrupted run's answer.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
cat >"$work/renumbered.sbatch" <<'SCRIPT'
#!/bin/bash
#SBATCH --requeue
#SBATCH --open-mode=append
echo "run ${SLURM_RESTART_COUNT:-0} on $SLURMD_NODENAME"
if [ "${SLURM_RESTART_COUNT:-0}" -ge 1 ]; then
    srun --mpi=none -N1 -n1 sh -c 'echo "extra step ran as step $SLURM_STEP_ID"'
fi
srun --mpi=none -N1 -n1 "$SERIAL_JOB" "$1" "$2" "answer-$SLURM_JOB_ID.txt"
echo "computation step done"
SCRIPT
chmod +x "$work/renumbered.sbatch"
chown "$TEST_USER:$TEST_USER" "$work/renumbered.sbatch"

"$SERIAL_JOB" 400 0 "$work/expected.txt" >/dev/null
job=$(submit "$work" -N1 -o "$work/renumbered-%j.out" --export=ALL,SERIAL_JOB="$SERIAL_JOB" \
    --checkpoint-interval=2s "$work/renumbered.sbatch" 400 50)
out=$work/renumbered-$job.out
wait_for_line "$out" '^step 10 of' 40
seq=$(wait_for_set "$job" 0 40)
node=$(job_node "$job")
note "job $job committed set $seq of step 0 on $node; killing it"
kill_node_until_done "$job" "$node" "$out"
grep -q "^extra step ran as step 0" "$out" || fail "the extra step did not run as itself: $(grep -v '^step' "$out")"
check_resumed_output "$out" "$work/answer-$job.txt" "$work/expected.txt"
grep -q "^computation step done" "$out" || fail "the script did not finish: $(grep -v '^step' "$out")"
no_agent_left "$job"
restore_node
note "ok (the computation resumed as step 1, the new step 0 ran)"
