#!/usr/bin/env bash
# The serial example checkpointed every 5 s; its node is killed once a set is committed;
# Slurm requeues it and the new run restores the newest set on another node instead of
# starting over. The output shows one start and progress continuing after the restore, the
# answer equals an uninterrupted run's, and no agent or engine process is left.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
script=$(dirname "$SERIAL_JOB")/serial-job.sbatch

"$SERIAL_JOB" 500 0 "$work/expected.txt" >/dev/null
job=$(submit "$work" --export=ALL,SERIAL_JOB="$SERIAL_JOB" --checkpoint-interval=5s "$script" 500 50)
out=$work/serial-job-$job.out
wait_for_line "$out" '^job .* run 0 on n[0-9], checkpoint interval 5 s' 30
seq=$(wait_for_set "$job" 0 30)
node=$(job_node "$job")
note "job $job on $node committed set $seq; killing $node"
kill_node_until_done "$job" "$node" "$out"
node2=$(job_field "$job" NodeList)
[ "$node2" != "$node" ] || fail "job $job ran again on the killed node $node"
check_resumed_output "$out" "$work/answer-$job.txt" "$work/expected.txt"
grep -q "restart count 1\|run 1" "$CKPT_ROOT/$job/agents/step-batch.node-0.log" ||
    fail "the second run's agent did not write as run 1: $(cat "$CKPT_ROOT/$job/agents/step-batch.node-0.log")"
as_user_in "$work" "$CKPT_JOB" verify "$job" --root "$CKPT_ROOT" || fail "job $job: sets do not verify"
no_agent_left "$job"

restore_node
note "ok (job $job: $node killed, resumed on $node2)"
