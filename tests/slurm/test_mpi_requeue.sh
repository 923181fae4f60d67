#!/usr/bin/env bash
# An unmodified Open MPI program (tests/mpi/mpi_stress: every kind of traffic, an exact
# checksum) as 4 ranks over 2 nodes under `srun --mpi=pmix`, checkpointed every few seconds:
# the ranks are quiesced with no message in flight, every node dumps its ranks without their
# lower halves, the lead commits one set with a member per rank. One node is killed; Slurm
# requeues the job, the ranks are restored on the nodes it gets (a fresh libmpi, the new
# step's PMIx), and the run ends with the checksum of an uninterrupted run, without having
# started over. The uninterrupted run is the same program in a job that does not checkpoint,
# whose ranks must not even see ckpt's library.
#   test_mpi_requeue.sh CLUSTER SERIAL_JOB CKPT_JOB CKPT_ENGINE IMAGE_CLAIM MPI_STRESS
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
prog=$(stage "${6:?the MPI program}")
iterations=${CKPT_TEST_MPI_ITERATIONS:-60000}

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
srun --mpi=pmix $prog $iterations
echo "mpi step done"
SCRIPT
chown "$TEST_USER:$TEST_USER" "$work/mpi.sbatch"

plain=$(submit "$work" --output="$work/plain-%j.out" "$work/mpi.sbatch")
JOB_TIMEOUT=240 wait_jobs_done "$plain"
[ "$(job_field "$plain" JobState)" = COMPLETED ] || fail "the uninterrupted run: $(cat "$work/plain-$plain.out")"
expected=$(grep '^stress ok:' "$work/plain-$plain.out") || fail "no result: $(cat "$work/plain-$plain.out")"
note "uninterrupted: $expected"

job=$(submit "$work" --output="$work/mpi-%j.out" --checkpoint-interval=5s "$work/mpi.sbatch")
out=$work/mpi-$job.out
seq=$(wait_for_set "$job" 0 90)
shown=$("$CKPT_JOB" show "$job" --set "$seq" --root "$CKPT_ROOT")
echo "$shown" | grep -q "members: 4 of 4" || fail "set $seq does not hold the 4 ranks: $shown"
grep -q "MPI ranks quiesced" "$CKPT_ROOT/$job"/agents/step-0.node-0.log ||
    fail "the ranks were not quiesced: $(tail -5 "$CKPT_ROOT/$job"/agents/step-0.node-0.log)"
[ "$(job_field "$job" JobState)" = RUNNING ] || fail "the job ended before the node was killed (make it longer): $(cat "$out")"
node=$(scontrol show hostnames "$(job_field "$job" NodeList)" | tail -1)
note "job $job committed set $seq (4 ranks on 2 nodes); killing $node"
kill_node_until_done "$job" "$node" "$out"
got=$(grep '^stress ok:' "$out") || fail "no result after the restart: $(cat "$out")"
[ "$got" = "$expected" ] || fail "after the restart '$got', uninterrupted '$expected'"
[ "$(grep -c '^stress: started' "$out")" = 1 ] || fail "the program started over: $(cat "$out")"
grep -q "step 0 task 3: job $job checkpoint set [0-9]*: restoring from" "$out" ||
    fail "rank 3 was not restored: $(cat "$out")"
no_agent_left "$job"
restore_node
note "ok ($node killed; 4 ranks restored, $got)"
