#!/usr/bin/env bash
# `ckpt-job restore` gives the new job the job's own environment, on a site that lets no
# job choose its checkpoint folder. A job submitted with an extra variable runs srun steps:
# the computation (checkpointed, then the job is cancelled) and a later step that uses the
# variable. The restore runs from an environment without that variable, through a client
# configuration with user_dir=no (ckpt-job names the site's root, which that allows); the
# restored job's script and later step see the original value, and Slurm's own variables are
# the new job's.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
value='two words; a=b "quoted" $NOT_EXPANDED'

cat >"$work/env-job.sh" <<'SCRIPT'
#!/bin/bash
#SBATCH --open-mode=append
echo "job $SLURM_JOB_ID: CKPT_TEST_VAR=${CKPT_TEST_VAR-unset}"
srun --mpi=none "$SERIAL_JOB" 300 40 "answer-$SLURM_JOB_ID.txt"
srun --mpi=none bash -c 'echo "later step of job $SLURM_JOB_ID: CKPT_TEST_VAR=${CKPT_TEST_VAR-unset}"'
SCRIPT
chmod 755 "$work/env-job.sh"
chown "$TEST_USER:$TEST_USER" "$work/env-job.sh"

conf=$(client_conf_with "$work" user_dir=no)
# sbatch with user_dir=no: another folder is refused, the root by another spelling is not.
if refused=$(as_user_in "$work" env SLURM_CONF="$conf" sbatch --test-only --checkpoint-dir=/tmp/elsewhere --wrap true 2>&1); then
    fail "user_dir=no accepted --checkpoint-dir=/tmp/elsewhere: $refused"
fi
grep -q "disabled on this cluster" <<<"$refused" || fail "unexpected refusal: $refused"
accepted=$(as_user_in "$work" env SLURM_CONF="$conf" sbatch --test-only --checkpoint-dir="$CKPT_ROOT//" --wrap true 2>&1) ||
    fail "user_dir=no refused the site root: $accepted"

job=$(submit "$work" --export=ALL,SERIAL_JOB="$SERIAL_JOB",CKPT_TEST_VAR="$value" \
    --checkpoint-interval=10m -o "$work/env-job-%j.out" "$work/env-job.sh")
out=$work/env-job-$job.out
wait_for_line "$out" '^step 30 of' 40
seq=$(ckpt_job_in "$work" checkpoint "$job" --wait) || fail "ckpt-job checkpoint --wait failed: $seq"
scancel "$job"
wait_jobs_done "$job"
note "job $job: set $seq committed, job cancelled"

saved=$CKPT_ROOT/$job/job-environment
[ "$(stat -c '%U %a' "$saved")" = "$TEST_USER 600" ] || fail "$saved: $(stat -c '%U %a' "$saved")"
tr '\0' '\n' <"$saved" | grep -xF "CKPT_TEST_VAR=$value" >/dev/null || fail "$saved lacks CKPT_TEST_VAR: $(tr '\0' '\n' <"$saved")"
! tr '\0' '\n' <"$saved" | grep -E '^(SLURM_|SLURMD_|_SLURM_SPANK_OPTION_|CKPT_(DIR|INTERVAL|KEEP|RESTART|RESTORE)=)' ||
    fail "$saved holds variables Slurm or the plugin set for each job"

# The caller's environment has no CKPT_TEST_VAR (and a root spelled with a trailing slash).
new=$(cd "$work" && runuser -u "$TEST_USER" -- env -i PATH=/usr/local/bin:/usr/bin:/bin \
    SLURM_CONF="$conf" CKPT_ROOT="$CKPT_ROOT/" HOME="$work" "$CKPT_JOB" restore "$job") ||
    fail "ckpt-job restore failed with user_dir=no: $new"
note "job $job restored as job $new"
JOB_TIMEOUT=90 wait_jobs_done "$new"
new_out=$work/env-job-$new.out
[ "$(job_field "$new" JobState)" = COMPLETED ] ||
    fail "job $new: $(job_field "$new" JobState): $(cat "$new_out" 2>&1)"
grep -q "job $job checkpoint set $seq: restoring from" "$new_out" ||
    fail "job $new did not restore set $seq: $(cat "$new_out")"
grep -qxF "job $new: CKPT_TEST_VAR=$value" "$new_out" ||
    fail "the restored job's script did not get the job's environment: $(grep -v '^step' "$new_out")"
grep -qxF "later step of job $new: CKPT_TEST_VAR=$value" "$new_out" ||
    fail "the later step did not see the original value: $(grep -v '^step' "$new_out")"
cat "$out" "$new_out" >"$work/both.out"
"$SERIAL_JOB" 300 0 "$work/expected.txt" >/dev/null
check_resumed_output "$work/both.out" "$work/answer-$job.txt" "$work/expected.txt"
no_agent_left "$new"
note "ok"
