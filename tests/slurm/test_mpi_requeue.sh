#!/usr/bin/env bash
# An unmodified Open MPI program (tests/mpi/mpi_stress: every kind of traffic, an exact
# checksum) as 4 ranks over 2 nodes under `srun --mpi=pmix`, checkpointed every few seconds:
# the ranks are quiesced with no message in flight, every node dumps its ranks without their
# lower halves, the lead commits one set with a member per rank. One node is killed; Slurm
# requeues the job, the ranks are restored on the nodes it gets (a fresh libmpi, the new
# step's PMIx), and the run ends with the checksum of an uninterrupted run, without having
# started over; the restored run is checkpointed in turn, and `ckpt-job restore` of the
# finished job runs its end once more from the newest set, again with the same checksum. The
# uninterrupted run is the same program in a job that does not checkpoint, whose ranks must
# not even see ckpt's library; a step of a program not linked with MPI is left alone too.
#   test_mpi_requeue.sh CLUSTER SERIAL_JOB CKPT_JOB CKPT_ENGINE IMAGE_CLAIM MPI_STRESS
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
prog=$(stage "${6:?the MPI program}")
iterations=${CKPT_TEST_MPI_ITERATIONS:-40000}

cat >"$work/mpi.sbatch" <<SCRIPT
#!/bin/bash
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --requeue
#SBATCH --open-mode=append
# Several slurmd on one host share one host name and /dev/shm: TCP between the ranks.
export OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
export OMPI_MCA_mpi_yield_when_idle=1
echo "job \$SLURM_JOB_ID run \${SLURM_RESTART_COUNT:-0} on \$SLURM_JOB_NODELIST"
srun --mpi=pmix -n1 bash -c 'echo "not MPI: LD_LIBRARY_PATH=\${LD_LIBRARY_PATH:-} CKPT_MPI_CONTROL=\${CKPT_MPI_CONTROL:-}"'
srun --mpi=pmix $prog $iterations
echo "mpi step done"
SCRIPT
chown "$TEST_USER:$TEST_USER" "$work/mpi.sbatch"

wait_for_ranks() {
    local deadline=$((SECONDS + 60)) seen
    while seen=$(libmpi_of_ranks "$prog " | sort -u) && [ -z "$seen" ]; do
        ((SECONDS < deadline)) || fail "no rank of job $1 running after 60 s"
        pause
    done
    echo "$seen"
}

plain_start=$SECONDS
plain=$(submit "$work" --output="$work/plain-%j.out" "$work/mpi.sbatch")
seen=$(wait_for_ranks "$plain")
[ "$seen" = open-mpi ] || fail "the ranks of a job that does not checkpoint mapped: $seen"
JOB_TIMEOUT=600 wait_jobs_done "$plain"  # 2 cores shared with builds: slow
[ "$(job_field "$plain" JobState)" = COMPLETED ] || fail "the uninterrupted run: $(cat "$work/plain-$plain.out")"
expected=$(grep '^stress ok:' "$work/plain-$plain.out") || fail "no result: $(cat "$work/plain-$plain.out")"
plain_seconds=$((SECONDS - plain_start))
note "uninterrupted: $expected ($plain_seconds s)"

job=$(submit "$work" --output="$work/mpi-%j.out" --checkpoint-interval=5s "$work/mpi.sbatch")
out=$work/mpi-$job.out
seen=$(wait_for_ranks "$job")
[ "$seen" = ckpt ] || fail "the ranks of a checkpointed job mapped: $seen (not only ckpt's libmpi)"
seq=$(wait_for_set "$job" 0 90)
shown=$("$CKPT_JOB" show "$job" --set "$seq" --root "$CKPT_ROOT")
echo "$shown" | grep "members: 4 of 4" >/dev/null && echo "$shown" | grep "^  RANK " >/dev/null ||
    fail "set $seq does not hold the 4 ranks: $shown"
grep -q "MPI ranks quiesced" "$CKPT_ROOT/$job"/agents/step-1.node-0.log ||
    fail "the ranks were not quiesced: $(tail -5 "$CKPT_ROOT/$job"/agents/step-1.node-0.log)"
[ "$(job_field "$job" JobState)" = RUNNING ] || fail "the job ended before the node was killed (make it longer): $(cat "$out")"
node=$(scontrol show hostnames "$(job_field "$job" NodeList)" | tail -1)
note "job $job committed set $seq (4 ranks on 2 nodes); killing $node"
# The restored run does at most what the whole uninterrupted one did (as slow as the machine
# is now): it gets 150 s, or twice the uninterrupted run's time when that was longer.
kill_node_until_done "$job" "$node" "$out" $((plain_seconds * 2 > 150 ? plain_seconds * 2 : 150))
got=$(grep '^stress ok:' "$out") || fail "no result after the restart: $(cat "$out")"
[ "$got" = "$expected" ] || fail "after the restart '$got', uninterrupted '$expected'"
[ "$(grep -c '^stress: started' "$out")" = 1 ] || fail "the program started over: $(cat "$out")"
grep -q "step 1 task 3: job $job checkpoint set [0-9]*: restoring from" "$out" ||
    fail "rank 3 was not restored: $(cat "$out")"
grep -q '^not MPI: LD_LIBRARY_PATH= CKPT_MPI_CONTROL=$' "$out" ||
    fail "a step not linked with MPI was changed: $(grep '^not MPI' "$out")"
"$CKPT_JOB" show "$job" --root "$CKPT_ROOT" | grep "written by run: 1" >/dev/null ||
    fail "the restored run was not checkpointed: $("$CKPT_JOB" show "$job" --root "$CKPT_ROOT")"
no_agent_left "$job"
restore_node
note "job $job: $node killed, 4 ranks restored on other nodes, $got"

# The finished job, once more from its newest set.
again=$(ckpt_job_in "$work" restore "$job" 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-) ||
    fail "ckpt-job restore $job: $again"
[[ $again =~ ^[0-9]+$ ]] || fail "ckpt-job restore printed '$again', not a job id"
JOB_TIMEOUT=180 wait_jobs_done "$again"
out2=$work/mpi-$again.out
[ "$(job_field "$again" JobState)" = COMPLETED ] || fail "ckpt-job restore's job $again: $(cat "$out2")"
[ "$(grep '^stress ok:' "$out2")" = "$expected" ] || fail "ckpt-job restore's job $again: $(cat "$out2")"
grep -q '^stress: started' "$out2" && fail "ckpt-job restore's job $again started over: $(cat "$out2")"
grep -q "step 1 task 0: job $job checkpoint set [0-9]*: restoring from" "$out2" ||
    fail "job $again did not restore rank 0: $(cat "$out2")"
note "ok (and ckpt-job restore $job as job $again: $expected)"
