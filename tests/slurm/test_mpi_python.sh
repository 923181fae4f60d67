#!/usr/bin/env bash
# An MPI program in Python (tests/mpi/mpi4py_ring.py: mpi4py, which loads libmpi at run time,
# so the plugin cannot tell from the program that it is an MPI rank) as 4 ranks over 2 nodes
# under `srun --mpi=pmix /usr/bin/python3`, in a job submitted with --checkpoint-mpi=always:
# every rank runs on ckpt's libmpi, is quiesced and checkpointed every 3 s (incremental sets
# after the first); a node is killed after an incremental set committed, Slurm requeues the
# job, and the ranks are restored on the nodes it gets and finish with the checksums an
# uninterrupted run computes, without starting over.
#   test_mpi_python.sh CLUSTER SERIAL_JOB CKPT_JOB CKPT_ENGINE IMAGE_CLAIM MPI4PY_RING
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
ring=$(stage "${6:?mpi4py_ring.py}")
# 2000 rounds of at least 10 ms: 20 s or more on any machine (3000 rounds alone took 20 s on
# a loaded machine and less than 4 s on a quiet one, ending before the first set).
rounds=${CKPT_TEST_MPI4PY_ROUNDS:-2000}
python=/usr/bin/python3
"$python" -c "import mpi4py" 2>/dev/null || fail "$python has no mpi4py (scripts/install-deps.sh installs python3-mpi4py)"

# What mpi4py_ring.py computes: rank r's checksum adds, every round k, the allreduce of
# rank + k (6 + 4k for 4 ranks) and twice what came from its left neighbour l (3l + 2k).
checksums=()
for r in 0 1 2 3; do
    l=$(((r + 3) % 4))
    checksums+=("$((rounds * (6 + 3 * l) + 3 * rounds * (rounds - 1)))")
done
expected="mpi4py ring ok: 4 ranks, $rounds rounds, checksums [$(IFS=,; echo "${checksums[*]}" | sed 's/,/, /g')], MPI (3, 1)"

cat >"$work/python.sbatch" <<SCRIPT
#!/bin/bash
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --requeue
#SBATCH --open-mode=append
# Several slurmd on one host share one host name and /dev/shm: TCP between the ranks.
export OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
export OMPI_MCA_mpi_yield_when_idle=1
echo "job \$SLURM_JOB_ID run \${SLURM_RESTART_COUNT:-0} on \$SLURM_JOB_NODELIST"
srun --mpi=pmix $python $ring $rounds 10
echo "python step done"
SCRIPT
chown "$TEST_USER:$TEST_USER" "$work/python.sbatch"

job=$(submit "$work" --output="$work/python-%j.out" --checkpoint-interval=3s --checkpoint-mpi=always \
    "$work/python.sbatch")
out=$work/python-$job.out
# mpi4py loads libmpi as the script imports it: the ranks are judged once all 4 have.
deadline=$((SECONDS + 60))
until seen=$(libmpi_of_ranks "$python $ring ") && [ "$(echo "$seen" | grep -c .)" = 4 ] && [ "$(echo "$seen" | sort -u)" = ckpt ]; do
    ((SECONDS < deadline)) || fail "the 4 ranks of job $job (--checkpoint-mpi=always) not all on ckpt's libmpi after 60 s: $(echo $seen); $(cat "$out")"
    pause
done
# The node is killed after an incremental set (the ranks' pages written since the set before
# it), so the restart restores ranks through a chain of sets.
seq=0
deadline=$((SECONDS + 120))
while :; do
    seq=$(wait_for_set "$job" "$seq" 90)
    shown=$("$CKPT_JOB" show "$job" --set "$seq" --root "$CKPT_ROOT")
    echo "$shown" | grep "^  incremental on: set [0-9]" >/dev/null && break
    ((SECONDS < deadline)) || fail "no incremental set of the ranks within 120 s: $shown"
done
echo "$shown" | grep "members: 4 of 4" >/dev/null && echo "$shown" | grep "^  RANK " >/dev/null ||
    fail "set $seq does not hold the 4 ranks: $shown"
[ "$(job_field "$job" JobState)" = RUNNING ] || fail "the job ended before the node was killed (make it longer): $(cat "$out")"
node=$(scontrol show hostnames "$(job_field "$job" NodeList)" | tail -1)
note "job $job committed set $seq (4 python ranks on 2 nodes); killing $node"
# The restored ranks are checkpointed every 3 s as well: on a loaded machine (load 7, two
# cores) they spent most of their time in sets and took 123 s to finish, against the
# default 150 s for the whole restart. The test is about the result, not the speed.
kill_node_until_done "$job" "$node" "$out" 360
got=$(grep '^mpi4py ring ok:' "$out") || fail "no result after the restart: $(cat "$out")"
[ "$got" = "$expected" ] || fail "after the restart '$got', expected '$expected'"
[ "$(grep -c '^mpi4py_ring: started' "$out")" = 1 ] || fail "the program started over: $(cat "$out")"
grep -q "step 0 task [0-3]: job $job checkpoint set [0-9]*: restoring from" "$out" ||
    fail "no rank was restored: $(cat "$out")"
no_agent_left "$job"
restore_node
note "ok ($node killed; 4 python ranks restored: $got)"
