#!/usr/bin/env bash
# Ranks that start far apart (docs/mpi.md, "A trap of Slurm's PMIx"): Open MPI 4.1 ends
# MPI_Init with a PMIx fence that, under Slurm's pmix plugin, holds only one node's ranks, so
# a rank may send before a peer on another node has registered its handlers, and the peer dies
# of SIGSEGV inside MPI_Init (plain Open MPI under this cluster's srun: 2 starts in 25 when the
# ranks start up to 2 s apart). ckpt's libmpi holds every rank after MPI_Init in a fence that
# collects data (a barrier of all ranks). Here 30 srun steps of 4 ranks over 2 nodes, each rank
# started after a random delay of up to 2 s, run through ckpt's libmpi
# (--checkpoint-mpi=always: the delay is a shell wrapper); every start must finish.
#   test_mpi_startup.sh CLUSTER SERIAL_JOB CKPT_JOB CKPT_ENGINE IMAGE_CLAIM MPI_STRESS
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
prog=$(stage "${6:?the MPI program}")
starts=${CKPT_TEST_MPI_STARTS:-30}

cat >"$work/late.sh" <<'WRAPPER'
#!/bin/bash
# Starts the rank after 0 to 1.9 s.
sleep "$((RANDOM % 20))e-1"
exec "$@"
WRAPPER
cat >"$work/starts.sbatch" <<SCRIPT
#!/bin/bash
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
# Several slurmd on one host share one host name and /dev/shm: TCP between the ranks.
export OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
export OMPI_MCA_mpi_yield_when_idle=1 CKPT_MPI_TRACE_INIT=1
for i in \$(seq $starts); do
    srun --mpi=pmix $work/late.sh $prog 20 >"$work/start-\$i.out" 2>&1
    echo "start \$i: \$?"
done
SCRIPT
chmod 755 "$work/late.sh"
chown "$TEST_USER:$TEST_USER" "$work/late.sh" "$work/starts.sbatch"

job=$(submit "$work" --output="$work/starts.out" --checkpoint-interval=1h --checkpoint-mpi=always "$work/starts.sbatch")
JOB_TIMEOUT=$((starts * 8)) wait_jobs_done "$job"
[ "$(grep -c '^start [0-9]*: ' "$work/starts.out")" = "$starts" ] || fail "not every start ran: $(cat "$work/starts.out")"
for i in $(seq "$starts"); do
    out=$work/start-$i.out
    grep -q "^start $i: 0$" "$work/starts.out" && grep -q '^stress ok: 4 ranks' "$out" ||
        fail "start $i of $starts failed: $(grep "^start $i:" "$work/starts.out"): $(grep -v '^ckpt-mpi:' "$out" | sed -n 1,20p)"
    [ "$(grep -c '^ckpt-mpi: rank [0-3] of 4: upper half ' "$out")" = 4 ] ||
        fail "start $i: not every rank ran through ckpt's libmpi: $(grep '^ckpt-mpi:' "$out")"
done
no_agent_left "$job"
note "ok ($starts starts of 4 ranks up to 2 s apart, all through ckpt's libmpi, none died in MPI_Init)"
