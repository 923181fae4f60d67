#!/usr/bin/env bash
# Two-level storage (local_dir= on the nodes; drain_hold= holds the first drain until the
# local-only state was seen): the serial example's set is dumped into its node's local folder
# and committed there first (index: writing, levels "local"; the images are in the local
# folder, not yet in the job's), then drained to the job's folder and committed there
# (levels "local shared"). A second set leaves set 1 "shared" only (the node keeps its
# newest local set, the older local copy is gone). The node is then killed: the job,
# requeued on another node, restarts from set 2 in the shared root and writes the
# uninterrupted answer.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
script=$(dirname "$SERIAL_JOB")/serial-job.sbatch
with_local_dir

"$SERIAL_JOB" 800 0 "$work/expected.txt" >/dev/null
job=$(submit "$work" --export=ALL,SERIAL_JOB="$SERIAL_JOB" --checkpoint-interval=10m "$script" 800 50)
out=$work/serial-job-$job.out
wait_for_line "$out" '^step 20 of' 30
node=$(job_node "$job")
local_job=$LOCAL_ROOT/$node/$job
[ "$(stat -c '%U %a' "$local_job" 2>/dev/null)" = "$TEST_USER 700" ] ||
    fail "$local_job: $(stat -c '%U %a' "$local_job" 2>&1) (the local job folder must be the user's, 0700)"

hold_drains
ckpt_job_in "$work" checkpoint "$job" >/dev/null || fail "ckpt-job checkpoint failed"
wait_for_levels "$job" 1 "writing local" 30
[ -s "$local_job/set-000001/member-0/inventory.img" ] || fail "no images in $local_job/set-000001/member-0: $(ls -R "$local_job")"
[ -z "$(ls -A "$CKPT_ROOT/$job/set-000001/member-0")" ] ||
    fail "set 1 is in the job's folder before its drain: $(ls "$CKPT_ROOT/$job/set-000001/member-0")"
note "job $job on $node: set 1 committed at the local level"
release_drains
wait_for_levels "$job" 1 "committed local shared" 30
as_user_in "$work" "$CKPT_JOB" verify "$job" --set 1 --root "$CKPT_ROOT" || fail "job $job set 1 does not verify"
note "set 1 drained and committed in the shared root"

seq=$(ckpt_job_in "$work" checkpoint "$job" --wait) || fail "ckpt-job checkpoint --wait failed: $seq"
[ "$seq" = 2 ] || fail "the second set is $seq"
[ "$(set_levels "$job" 2)" = "committed local shared" ] || fail "set 2: $(set_levels "$job" 2)"
[ "$(set_levels "$job" 1)" = "committed shared" ] || fail "set 1: $(set_levels "$job" 1) (its local copy was pruned)"
[ ! -e "$local_job/set-000001" ] || fail "$local_job/set-000001 is still there"
[ -d "$local_job/set-000002" ] || fail "$local_job/set-000002 is gone"

note "killing $node"
kill_node_until_done "$job" "$node" "$out"
node2=$(job_field "$job" NodeList)
[ "$node2" != "$node" ] || fail "job $job ran again on the killed node $node"
grep -q "restoring from $CKPT_ROOT/$job/set-000002/member-0" "$out" || fail "job $job did not restore set 2 from the shared root: $(cat "$out")"
check_resumed_output "$out" "$work/answer-$job.txt" "$work/expected.txt"
no_agent_left "$job"
restore_node
note "ok (job $job: set 2 drained, $node killed, resumed on $node2 from the shared root)"
