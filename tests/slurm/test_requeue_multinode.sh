#!/usr/bin/env bash
# Node failure under a two-node job: one of its nodes is killed; Slurm cleans up the step on
# the surviving node, requeues the job and runs its srun step again on two live nodes with
# SLURM_RESTART_COUNT=1. Nothing of the first run is left. The killed node is started again.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)

cat >"$work/job.sh" <<'SCRIPT'
#!/bin/bash
#SBATCH -N2
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --checkpoint-interval=1m
run=${SLURM_RESTART_COUNT:-0}
echo "batch run $run node $SLURMD_NODENAME pid $$"
if [ "$run" -ge 1 ]; then
    srun -N2 --ntasks-per-node=1 sh -c 'echo "task run 1 node $SLURMD_NODENAME interval $CKPT_INTERVAL"'
    echo finished
    exit 0
fi
srun -N2 --ntasks-per-node=1 sh -c 'echo "task run 0 node $SLURMD_NODENAME pid $$"; exec sleep 600'
SCRIPT
chmod 755 "$work/job.sh"
job=$(submit "$work" -o "$work/job.out" "$work/job.sh")
wait_for_line "$work/job.out" '^task run 0 .*' 30
deadline=$((SECONDS + 20))
while [ "$(grep -c '^task run 0' "$work/job.out")" != 2 ]; do
    ((SECONDS < deadline)) || fail "the first run's two tasks did not start: $(cat "$work/job.out")"
    pause
done
mapfile -t first_pids < <(grep -E '^(batch|task) run 0' "$work/job.out" | awk '{print $NF}')
# Kill the node that is not the batch node: the batch script itself survives the failure
# and Slurm has to end it.
batch_node=$(awk '/^batch run 0/ {print $5}' "$work/job.out")
victim=$(awk -v b="$batch_node" '/^task run 0/ && $5 != b {print $5}' "$work/job.out")
[ -n "$victim" ] || fail "no task on a node other than $batch_node: $(cat "$work/job.out")"
note "job $job on $batch_node and $victim (pids ${first_pids[*]}); killing $victim"

started=$SECONDS
# Whatever happens next, the node comes back for the tests after this one.
trap 'bash "$HERE/cluster.sh" start-node "$CKPT_CLUSTER_DIR" "$victim" >/dev/null 2>&1 || true' EXIT
bash "$HERE/cluster.sh" kill-node "$CKPT_CLUSTER_DIR" "$victim"
wait_for_line "$work/job.out" '^finished$' 120
note "requeued and finished after $((SECONDS - started)) s"

second=$(grep '^task run 1' "$work/job.out" | sort)
[ "$(wc -l <<<"$second")" = 2 ] || fail "second run did not have two tasks: $(cat "$work/job.out")"
! grep -q "node $victim " <<<"$second" || fail "second run used the killed node $victim: $second"
grep -c "interval 60$" <<<"$second" | grep -x 2 >/dev/null || fail "second run lost the interval: $second"
for pid in "${first_pids[@]}"; do
    if running "$pid"; then
        fail "first run's process $pid is still running"
    fi
done
JOB_TIMEOUT=30 wait_jobs_done "$job"
[ "$(job_field "$job" Restarts)" = 1 ] || fail "job $job: Restarts=$(job_field "$job" Restarts)"

trap - EXIT
bash "$HERE/cluster.sh" start-node "$CKPT_CLUSTER_DIR" "$victim"
note "ok ($victim back)"
