#!/usr/bin/env bash
# The harness's node failure: a --requeue job's node is killed (slurmd, step daemon and
# tasks SIGKILLed); Slurm requeues the job and runs it again on another node with
# SLURM_RESTART_COUNT=1 and the same checkpoint settings. The killed node is started again.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)

cat >"$work/job.sh" <<'SCRIPT'
#!/bin/bash
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --checkpoint-interval=30s
echo "run ${SLURM_RESTART_COUNT:-0} node $SLURMD_NODENAME pid $$ interval ${CKPT_INTERVAL-unset}"
if [ "${SLURM_RESTART_COUNT:-0}" -ge 1 ]; then
    echo "finished"
    exit 0
fi
sleep 600
SCRIPT
chmod 755 "$work/job.sh"
job=$(submit "$work" -o "$work/job.out" "$work/job.sh")
wait_for_line "$work/job.out" '^run 0 node n[0-9]+ pid [0-9]+ interval 30$' 30
read -r _ _ _ node _ pid _ < <(grep '^run 0' "$work/job.out")
note "job $job runs on $node (script pid $pid); killing $node"

started=$SECONDS
# Whatever happens next, the node comes back for the tests after this one.
trap 'bash "$HERE/cluster.sh" start-node "$CKPT_CLUSTER_DIR" "$node" >/dev/null 2>&1 || true' EXIT
bash "$HERE/cluster.sh" kill-node "$CKPT_CLUSTER_DIR" "$node"
if running "$pid"; then
    fail "job script pid $pid survived kill-node"
fi

JOB_TIMEOUT=120
wait_for_line "$work/job.out" '^finished$' 120
note "requeued and finished after $((SECONDS - started)) s"
second=$(grep '^run 1' "$work/job.out") || fail "no second run: $(cat "$work/job.out")"
read -r _ _ _ node2 _ _ _ interval2 <<<"$second"
[ "$node2" != "$node" ] || fail "second run on the killed node $node"
[ "$interval2" = 30 ] || fail "second run lost the interval: $second"
wait_jobs_done "$job"
[ "$(job_field "$job" JobState)" = COMPLETED ] || fail "job $job: $(job_field "$job" JobState)"
[ "$(job_field "$job" Restarts)" = 1 ] || fail "job $job: Restarts=$(job_field "$job" Restarts)"

trap - EXIT
bash "$HERE/cluster.sh" start-node "$CKPT_CLUSTER_DIR" "$node"
note "ok ($node back)"
