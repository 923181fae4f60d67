#!/usr/bin/env bash
# A rank killed while its step is being quiesced (docs/mpi.md, "Under Slurm"): 4 ranks of
# tests/mpi/mpi_stress over 2 nodes; a first set is committed on request; then one rank is
# stopped (it cannot reach a safe point), a second set is requested, and the stopped rank is
# killed while the coordinator waits for it. The set in progress must fail at once, naming the
# rank, with nothing of it left committed; no rank stays parked or frozen (the others are
# resumed, and Open MPI ends the step as it does when a rank dies); no agent or engine is
# left behind; the job's newest committed set is still the first one, and `ckpt-job restore`
# runs the job on from it to the checksum of an uninterrupted run, without starting over.
#   test_mpi_rank_killed.sh CLUSTER SERIAL_JOB CKPT_JOB CKPT_ENGINE IMAGE_CLAIM MPI_STRESS
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
prog=$(stage "${6:?the MPI program}")
iterations=${CKPT_TEST_MPI_ITERATIONS:-20000}

# The uninterrupted run's checksum, from Open MPI alone outside Slurm (a copy of the program:
# the job's ranks are found by its path), before the job: two Open MPI launches of one user on
# one host at once may trip over each other.
install -o "$TEST_USER" -m 755 "$prog" "$work/stress-alone"
as_user_in "$work" env OMPI_MCA_btl=self,tcp timeout 120 mpirun -n 4 --oversubscribe "$work/stress-alone" "$iterations" \
    >"$work/uninterrupted.out" 2>&1 || fail "the uninterrupted run failed: $(cat "$work/uninterrupted.out")"
expected=$(grep '^stress ok:' "$work/uninterrupted.out") || fail "no result: $(cat "$work/uninterrupted.out")"

cat >"$work/mpi.sbatch" <<SCRIPT
#!/bin/bash
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --open-mode=append
# Several slurmd on one host share one host name and /dev/shm: TCP between the ranks.
export OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
export OMPI_MCA_mpi_yield_when_idle=1
srun --mpi=pmix $prog $iterations
echo "mpi step ended: \$?"
SCRIPT
chown "$TEST_USER:$TEST_USER" "$work/mpi.sbatch"

ranks() { pgrep -u "$TEST_USER" -f "^$prog " || true; }

# Sets only on request: the interval is longer than the job.
job=$(submit "$work" --output="$work/mpi-%j.out" --checkpoint-interval=1h "$work/mpi.sbatch")
out=$work/mpi-$job.out
deadline=$((SECONDS + 60))
until [ "$(ranks | wc -l)" = 4 ] && grep -qs "MPI ranks relayed to the lead" "$CKPT_ROOT/$job"/agents/step-0.node-1.log; do
    ((SECONDS < deadline)) || fail "job $job: 4 ranks and the relays not up after 60 s: $(cat "$out")"
    pause
done
# Until every rank has finished MPI_Init and reached the coordinator, a set fails saying so.
for try in 1 2 3 4 5 6; do
    first=$(ckpt_job_in "$work" checkpoint "$job" --wait 2>&1) && break
    [[ $first == *"reached the coordinator"* || $first == *"not in MPI yet"* ]] && [ "$try" -lt 6 ] ||
        fail "the first set of job $job: $first"
    sleep 1
done
note "job $job committed set $first (4 ranks)"

victim=$(ranks | tail -1)
kill -STOP "$victim"
ckpt_job_in "$work" checkpoint "$job" --wait >"$work/second.out" 2>&1 &
second=$!
# The coordinator waits for the stopped rank while the others park.
sleep 3
kill -0 "$second" 2>/dev/null || fail "the second set ended while a rank was stopped: $(cat "$work/second.out")"
kill -KILL "$victim"
note "rank pid $victim stopped during the quiesce, then killed"
deadline=$((SECONDS + 20))
while kill -0 "$second" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "the set did not fail within 20 s of the rank's death"
    pause
done
wait "$second" && fail "a set was committed without the killed rank: $(cat "$work/second.out")"
grep -qE "set [0-9]+ failed: .*rank [0-9]+" "$work/second.out" ||
    fail "the failed set does not name the rank: $(cat "$work/second.out")"
note "$(cat "$work/second.out")"

JOB_TIMEOUT=120 wait_jobs_done "$job"
grep -q "^mpi step ended: [1-9]" "$out" || fail "the step did not end with an error: $(cat "$out")"
# Nothing frozen or parked: every process of the job is gone.
left=$(pgrep -u "$TEST_USER" -af "^$prog " || true)
[ -z "$left" ] || fail "ranks left behind: $left"
no_agent_left "$job"
[ "$(current_set "$job")" = "$first" ] || fail "the newest committed set is $(current_set "$job"), not $first"
"$CKPT_JOB" list "$job" --root "$CKPT_ROOT" | grep -E "failed" >/dev/null ||
    fail "ckpt-job list does not show the failed set: $("$CKPT_JOB" list "$job" --root "$CKPT_ROOT")"

again=$(ckpt_job_in "$work" restore "$job" 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-) ||
    fail "ckpt-job restore $job: $again"
[[ $again =~ ^[0-9]+$ ]] || fail "ckpt-job restore printed '$again', not a job id"
JOB_TIMEOUT=240 wait_jobs_done "$again"
out2=$work/mpi-$again.out
[ "$(job_field "$again" JobState)" = COMPLETED ] || fail "ckpt-job restore's job $again: $(cat "$out2")"
grep -q "step 0 task 0: job $job checkpoint set $first: restoring from" "$out2" ||
    fail "job $again did not restore rank 0 from set $first: $(cat "$out2")"
[ "$(grep '^stress ok:' "$out2")" = "$expected" ] || fail "job $again: $(cat "$out2"), uninterrupted: $expected"
grep -q '^stress: started' "$out2" && fail "job $again started over: $(cat "$out2")"
no_agent_left "$again"
note "ok (set $first restored as job $again: $expected)"
