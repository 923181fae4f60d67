#!/usr/bin/env bash
# examples/serial-job/srun-job.sbatch: a setup step, then the computation as an srun step on
# two nodes (one task each, each with its own state in memory), checkpointed every 5 s. One
# node is killed; Slurm requeues the job and re-runs the script: the finished setup step is
# not run again, each task of the computation is restored from the newest set on the new
# nodes, and both tasks write the uninterrupted run's answer.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
script=$(dirname "$SERIAL_JOB")/srun-job.sbatch

"$SERIAL_JOB" 500 0 "$work/expected.txt" >/dev/null
job=$(submit "$work" --export=ALL,SERIAL_JOB="$SERIAL_JOB" --checkpoint-interval=5s "$script" 500 50)
out=$work/srun-job-$job.out
wait_for_line "$out" '^1: step 10 of' 40
seq=$(wait_for_set "$job" 0 40)
"$CKPT_JOB" show "$job" --set "$seq" --root "$CKPT_ROOT" | grep "members: 2 of 2" >/dev/null ||
    fail "set $seq does not hold both tasks: $("$CKPT_JOB" show "$job" --set "$seq" --root "$CKPT_ROOT")"
node=$(scontrol show hostnames "$(job_field "$job" NodeList)" | tail -1)
note "job $job committed set $seq (step 1, 2 members); killing $node"
kill_node_until_done "$job" "$node" "$out"
grep -q "^ckpt: job $job step 0 task 0: not run again" "$out" ||
    fail "the finished setup step ran again: $(grep -v ': step' "$out")"
for task in 0 1; do
    grep "^$task: " "$out" | sed "s/^$task: //" >"$work/task$task.out"
    check_resumed_output "$work/task$task.out" "$work/answer-$job-$task.txt" "$work/expected.txt"
done
# The requeued run finishes the computation once. (The first run's script may still print its
# line after srun lost the node, before slurmstepd cancels it: a race of Slurm's, not ours.)
[ "$(sed -n "/^job $job run 1 on/,\$p" "$out" | grep -c '^computation step done')" = 1 ] ||
    fail "unexpected script output: $(grep -v ': step' "$out")"
no_agent_left "$job"

restore_node
note "ok ($node killed; both tasks resumed)"
