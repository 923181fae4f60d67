#!/usr/bin/env bash
# Two-level storage, node lost during a drain (local_dir=; drain_hold=, test-only, holds
# every drain while its file exists): set 1 is drained and committed in the shared root; set 2
# is committed at the local level and its node is killed while set 2 drains. With
# --checkpoint-keep=1 the shared set 1 must survive (retention counts only sets complete in
# the shared root); the requeued job restarts from set 1 on another node and writes the
# uninterrupted answer; set 2 ends failed (abandoned), never committed in the shared root.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
script=$(dirname "$SERIAL_JOB")/serial-job.sbatch
with_local_dir

"$SERIAL_JOB" 800 0 "$work/expected.txt" >/dev/null
job=$(submit "$work" --export=ALL,SERIAL_JOB="$SERIAL_JOB" --checkpoint-interval=10m --checkpoint-keep=1 \
    "$script" 800 50)
out=$work/serial-job-$job.out
wait_for_line "$out" '^step 10 of' 30
node=$(job_node "$job")
seq=$(ckpt_job_in "$work" checkpoint "$job" --wait) || fail "ckpt-job checkpoint --wait failed: $seq"
[ "$seq" = 1 ] && [ "$(set_levels "$job" 1)" = "committed local shared" ] || fail "set $seq: $(set_levels "$job" 1)"
hold_drains
ckpt_job_in "$work" checkpoint "$job" >/dev/null || fail "ckpt-job checkpoint failed"
wait_for_levels "$job" 2 "writing local" 30
note "job $job on $node: set 2 committed locally, draining; killing $node"
KILLED_NODE=$node
bash "$HERE/cluster.sh" kill-node "$CKPT_CLUSTER_DIR" "$node"
release_drains
JOB_TIMEOUT=150 wait_jobs_done "$job"
[ "$(job_field "$job" JobState)" = COMPLETED ] || fail "job $job: $(job_field "$job" JobState): $(cat "$out")"
[ "$(job_field "$job" Restarts)" = 1 ] || fail "job $job: Restarts=$(job_field "$job" Restarts)"
node2=$(job_field "$job" NodeList)
[ "$node2" != "$node" ] || fail "job $job ran again on the killed node $node"
grep -q "restoring from $CKPT_ROOT/$job/set-000001/member-0" "$out" ||
    fail "job $job did not restart from the shared set 1: $(cat "$out")"
check_resumed_output "$out" "$work/answer-$job.txt" "$work/expected.txt"
[ "$(set_levels "$job" 2)" = "failed local" ] || fail "set 2: $(set_levels "$job" 2)"
no_agent_left "$job"
note "ok (job $job: $node killed during the drain of set 2, resumed on $node2 from set 1)"
