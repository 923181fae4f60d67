#!/usr/bin/env bash
# An unmodified real MPI application packaged by Debian, hpcc (the HPC Challenge benchmark:
# HPL, PTRANS, RandomAccess, FFT, STREAM, DGEMM, each verified by hpcc itself), as 4 ranks
# over 2 nodes, launched as job scripts launch it, with mpirun (ckpt-mpirun, which runs the ranks
# with srun --mpi=pmix inside the allocation), checkpointed every 3 s. One node is killed after a
# committed set; Slurm requeues the job and the ranks are restored on the nodes it gets.
# hpcc's own verification must pass, alike to an uninterrupted run's, and its output must
# show it did not start over: hpccoutf.txt, which rank 0 keeps open and writes after the
# checkpoint, is rolled back to its size at the checkpoint and written on from there.
#   test_mpi_hpcc.sh CLUSTER SERIAL_JOB CKPT_JOB CKPT_ENGINE IMAGE_CLAIM HPCC_LIB CKPT_MPIRUN
. "$(dirname "$0")/lib.sh"
. "${6:?hpcc_lib.sh}"
work=$(user_scratch)
hpcc=$(command -v hpcc) || fail "hpcc is not installed (scripts/install-deps.sh installs it)"
mpirun=$(stage "${7:?ckpt-mpirun}")

cat >"$work/hpcc.sbatch" <<SCRIPT
#!/bin/bash
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --requeue
#SBATCH --open-mode=append
# Several slurmd on one host share one host name and /dev/shm: TCP between the ranks.
export OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
echo "job \$SLURM_JOB_ID run \${SLURM_RESTART_COUNT:-0} on \$SLURM_JOB_NODELIST"
$mpirun -np 4 --map-by ppr:2:node --mca mpi_yield_when_idle 1 $hpcc
echo "hpcc step done"
SCRIPT
# Each run in a folder of its own: hpcc reads hpccinf.txt there and writes hpccoutf.txt.
for run in plain ckpt; do
    hpcc_input "$work/$run" 4 1000
    cp "$work/hpcc.sbatch" "$work/$run/"
done
chown -R "$TEST_USER:$TEST_USER" "$work"

plain=$(submit "$work/plain" --output="$work/plain/job.out" "$work/plain/hpcc.sbatch")
JOB_TIMEOUT=240 wait_jobs_done "$plain"
[ "$(job_field "$plain" JobState)" = COMPLETED ] || fail "the uninterrupted run: $(cat "$work/plain/job.out")"
hpcc_check_passed "$work/plain/hpccoutf.txt" "$work/plain.verdicts" "uninterrupted hpcc"

job=$(submit "$work/ckpt" --output="$work/ckpt/job.out" --checkpoint-interval=3s "$work/ckpt/hpcc.sbatch")
out=$work/ckpt/job.out
seq=$(wait_for_set "$job" 0 90)
"$CKPT_JOB" show "$job" --set "$seq" --root "$CKPT_ROOT" | grep "members: 4 of 4" >/dev/null ||
    fail "set $seq does not hold the 4 ranks"
[ "$(job_field "$job" JobState)" = RUNNING ] || fail "hpcc ended before the node was killed: $(cat "$out")"
node=$(scontrol show hostnames "$(job_field "$job" NodeList)" | tail -1)
note "job $job committed set $seq (4 hpcc ranks on 2 nodes); killing $node"
kill_node_until_done "$job" "$node" "$out"
grep -q "step 0 task 0: job $job checkpoint set [0-9]*: restoring from" "$out" ||
    fail "rank 0 was not restored: $(cat "$out")"
hpcc_check_passed "$work/ckpt/hpccoutf.txt" "$work/ckpt.verdicts" "hpcc restored after a node failure"
cmp -s "$work/plain.verdicts" "$work/ckpt.verdicts" ||
    fail "the verification results differ: $(diff "$work/plain.verdicts" "$work/ckpt.verdicts")"
no_agent_left "$job"
restore_node
note "ok ($node killed; hpcc's ranks restored, its verification passed)"
