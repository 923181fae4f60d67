#!/usr/bin/env bash
# The suite's cleanup: with a batch job and an srun step still running, `cluster.sh down`
# must leave nothing behind: no daemon, step daemon or job process of the cluster.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch 2>/dev/null) || work=""
pids=()
if [ -n "$work" ] && job=$(as_user_in "$work" sbatch --parsable -N2 -o "$work/job.out" --wrap \
    'echo "batch $$"; srun -N2 sh -c "echo task \$\$; exec sleep 600" & sleep 600' 2>&1); then
    # Both tasks and the batch script running, if the cluster is healthy enough.
    deadline=$((SECONDS + 30))
    while [ "$(grep -c '^task ' "$work/job.out" 2>/dev/null)" != 2 ] && ((SECONDS < deadline)); do
        pause
    done
    mapfile -t pids < <(awk '{print $2}' "$work/job.out" 2>/dev/null)
    note "job $job running, processes ${pids[*]:-none seen}"
else
    note "no job started (cluster not healthy?); checking the teardown alone"
fi

bash "$HERE/cluster.sh" down "$CKPT_CLUSTER_DIR" || fail "cluster.sh down failed"

left=$(pgrep -af -- "$CKPT_CLUSTER_DIR/" | grep -v -e "test_down.sh" -e "cluster.sh" || true)
[ -z "$left" ] || fail "processes naming $CKPT_CLUSTER_DIR still running: $left"
sockets=$(ss -xlpn | grep -F "$CKPT_CLUSTER_DIR/" || true)
[ -z "$sockets" ] || fail "sockets of the cluster still open: $sockets"
for pid in "${pids[@]}"; do
    if running "$pid"; then
        fail "job process $pid still running: $(tr '\0' ' ' <"/proc/$pid/cmdline")"
    fi
done
[ ${#pids[@]} = 0 ] || [ ${#pids[@]} = 3 ] || fail "saw ${#pids[@]} of the job's 3 processes"
note "ok"
