#!/usr/bin/env bash
# A step over all three nodes: from an interactive srun and from a batch job's srun, each
# task on its own node, each seeing the step's checkpoint settings.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
nodes=$(sinfo -h -N -o %N | sort -u | paste -sd' ')
[ "$nodes" = "n1 n2 n3" ] || fail "expected nodes n1 n2 n3, sinfo shows '$nodes'"

out=$(as_user_in "$work" srun -N3 --ntasks-per-node=1 --checkpoint-interval=90s \
    sh -c 'echo "$SLURMD_NODENAME $SLURM_NODEID ${CKPT_INTERVAL-unset} $(id -un)"' 2>&1) ||
    fail "srun -N3 failed: $out"
want="n1 0 90 $TEST_USER
n2 1 90 $TEST_USER
n3 2 90 $TEST_USER"
[ "$(sort <<<"$out")" = "$want" ] || fail "srun -N3 printed '$out', expected '$want'"

job=$(submit "$work" -N3 -o "$work/job.out" --checkpoint-interval=2m --wrap \
    'srun -N3 --ntasks-per-node=1 sh -c "echo \$SLURMD_NODENAME \${CKPT_INTERVAL-unset}"')
wait_jobs_done "$job"
[ "$(job_field "$job" JobState)" = COMPLETED ] || fail "job $job: $(job_field "$job" JobState)"
want="n1 120
n2 120
n3 120"
[ "$(sort "$work/job.out")" = "$want" ] || fail "batch srun -N3 printed '$(cat "$work/job.out")'"
note "ok"
