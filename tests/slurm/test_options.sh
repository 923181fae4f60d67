#!/usr/bin/env bash
# --checkpoint-* options through real sbatch and srun as an unprivileged user: every valid
# interval form reaches the job as CKPT_INTERVAL seconds; invalid values are refused at
# submission with the valid forms in the message; the other options reach the job too.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)

# Refused at submission: non-zero exit, the message names the valid forms, no job created.
before=$(squeue -h -u "$TEST_USER" | wc -l)
for bad in abc 10:75 5x 1:2:3:4 -5 '' 2-25:00:61; do
    if out=$(as_user_in "$work" sbatch --checkpoint-interval="$bad" --wrap true 2>&1); then
        fail "--checkpoint-interval='$bad' was accepted: $out"
    fi
    grep -qF "invalid checkpoint interval '$bad'" <<<"$out" || fail "no reason for '$bad': $out"
    grep -qF "MIN:SEC, HH:MM:SS, D-HH" <<<"$out" || fail "no valid forms for '$bad': $out"
done
for bad in "--checkpoint-keep=0" "--checkpoint-keep=many" "--checkpoint-dir=relative/dir" \
    "--checkpoint-restore=abc" "--checkpoint-restore=12:x"; do
    if out=$(as_user_in "$work" sbatch "$bad" --wrap true 2>&1); then
        fail "$bad was accepted: $out"
    fi
    grep -qF -- "${bad%%=*}" <<<"$out" || fail "message for $bad does not name the option: $out"
done
out=$(as_user_in "$work" srun --checkpoint-interval=abc true 2>&1) && fail "srun accepted abc: $out"
grep -qF "invalid checkpoint interval 'abc'" <<<"$out" || fail "srun gave no reason: $out"
out=$(as_user_in "$work" salloc -N1 --checkpoint-interval=5x true 2>&1) && fail "salloc accepted 5x: $out"
grep -qF "invalid checkpoint interval '5x'" <<<"$out" || fail "salloc gave no reason: $out"
after=$(squeue -h -u "$TEST_USER" | wc -l)
[ "$before" = "$after" ] || fail "a refused submission created a job"
note "invalid values refused"

# A bad plugstack.conf argument stops the client before anything is submitted, with a
# message that names the argument (a client-side copy of the configuration is enough).
mkdir -p "$work/badconf"
sed "s|^PlugStackConfig=.*|PlugStackConfig=$work/badconf/plugstack.conf|" "$SLURM_CONF" >"$work/badconf/slurm.conf"
plugin=$(awk '$1 == "required" { print $2 }' "$CKPT_CLUSTER_DIR/etc/plugstack.conf")
[ -n "$plugin" ] || fail "no plugin line in $CKPT_CLUSTER_DIR/etc/plugstack.conf"
echo "required $plugin keep=0" >"$work/badconf/plugstack.conf"
chown -R "$TEST_USER:$TEST_USER" "$work/badconf"
out=$(SLURM_CONF=$work/badconf/slurm.conf as_user_in "$work" sbatch --wrap true 2>&1) &&
    fail "sbatch ran with plugin argument keep=0: $out"
grep -qF "plugin argument keep" <<<"$out" || fail "no reason for the bad plugin argument: $out"

# users= limits who may checkpoint: ckpttest2 is refused, ckpttest is not. (The copy lives
# where both users can read it.)
conf=$CKPT_CLUSTER_DIR/work/users-conf
rm -rf "$conf"
mkdir -p "$conf"
sed "s|^PlugStackConfig=.*|PlugStackConfig=$conf/plugstack.conf|" "$SLURM_CONF" >"$conf/slurm.conf"
echo "required $plugin users=$TEST_USER" >"$conf/plugstack.conf"
chmod -R a+rX "$conf"
other_work=$CKPT_CLUSTER_DIR/work/ckpttest2
out=$(SLURM_CONF=$conf/slurm.conf TEST_USER=ckpttest2 as_user_in "$other_work" \
    sbatch --checkpoint-interval=10m --wrap true 2>&1) && fail "ckpttest2 was allowed: $out"
grep -qF "user ckpttest2 may not use checkpointing" <<<"$out" || fail "no reason for refusing ckpttest2: $out"
out=$(SLURM_CONF=$conf/slurm.conf TEST_USER=ckpttest2 as_user_in "$other_work" \
    sbatch --parsable -o /dev/null --wrap true 2>&1) || fail "ckpttest2 without options was refused: $out"
out=$(SLURM_CONF=$conf/slurm.conf as_user_in "$work" \
    sbatch --parsable -o /dev/null --checkpoint-interval=10m --wrap true 2>&1) || fail "$TEST_USER was refused: $out"

# Accepted: each form's job sees the interval in seconds.
declare -A expect=([30]=1800 [10:30]=630 [1:00:00]=3600 [2-12]=216000 [2-12:30]=217800
    [30s]=30 [10m]=600 [2h]=7200 [1d]=86400 [0]=0)
declare -A jobs=()
for form in "${!expect[@]}"; do
    jobs[$form]=$(submit "$work" --checkpoint-interval="$form" -o "$work/form-%j.out" \
        --wrap 'echo "CKPT_INTERVAL=${CKPT_INTERVAL-unset}"')
done

# In the script's #SBATCH lines, overridden per step by srun, inherited by srun without it.
# The chosen folder is this cluster's: job ids (and so folders) repeat between clusters.
user_dir=$CKPT_CLUSTER_DIR/user-dir
rm -rf "$user_dir"
cat >"$work/script.sh" <<SCRIPT
#!/bin/bash
#SBATCH --checkpoint-interval=10m
#SBATCH --checkpoint-keep=3
#SBATCH --checkpoint-dir=$user_dir
#SBATCH --checkpoint-restore=12:3
#SBATCH --no-checkpoint-restart
echo "batch \${CKPT_INTERVAL-unset} \${CKPT_KEEP-unset} \${CKPT_DIR-unset} \${CKPT_RESTORE-unset} \${CKPT_RESTART-unset}"
srun --checkpoint-interval=45s sh -c 'echo "step \${CKPT_INTERVAL-unset}"'
srun sh -c 'echo "inherited \${CKPT_INTERVAL-unset}"'
SCRIPT
chmod 755 "$work/script.sh"
script_job=$(submit "$work" -o "$work/script.out" "$work/script.sh")
plain_job=$(submit "$work" -o "$work/plain.out" --wrap 'echo "CKPT_INTERVAL=${CKPT_INTERVAL-unset}"')

# salloc: the allocation's steps get the value.
out=$(as_user_in "$work" salloc -N2 --checkpoint-interval=1m srun printenv CKPT_INTERVAL 2>/dev/null) ||
    fail "salloc --checkpoint-interval=1m failed"
[ "$out" = $'60\n60' ] || fail "salloc's steps saw '$out', expected 60 twice"

wait_jobs_done "${jobs[@]}" "$script_job" "$plain_job"
for form in "${!expect[@]}"; do
    f=$work/form-${jobs[$form]}.out
    got=$(cat "$f" 2>/dev/null || true)
    [ "$got" = "CKPT_INTERVAL=${expect[$form]}" ] ||
        fail "--checkpoint-interval=$form: job ${jobs[$form]} saw '$got', expected ${expect[$form]}"
done
note "valid forms: ${!expect[*]}"

want="batch 600 3 $user_dir 12:3 0
step 45
inherited 600"
# Job 12 has no checkpoints: each task says it starts from the beginning (lines "ckpt: ...").
# srun may say it waits for the previous step's resources ("srun: Job step creation
# temporarily disabled, retrying") on a loaded machine.
[ "$(grep -v '^ckpt: \|^srun: ' "$work/script.out")" = "$want" ] || fail "#SBATCH options: got '$(cat "$work/script.out")', expected '$want'"
grep -q '^ckpt: job [0-9]* step batch task 0: starting from the beginning: job 12 has no checkpoints' "$work/script.out" ||
    fail "the restore of a job without checkpoints did not say so: $(cat "$work/script.out")"
[ "$(cat "$work/plain.out")" = "CKPT_INTERVAL=unset" ] || fail "a job without options got: $(cat "$work/plain.out")"

# slurmstepd recorded the settings in the node's log for the agent's benefit.
grep -hF "ckpt: job $script_job step batch" "$CKPT_CLUSTER_DIR"/log/slurmd.*.log | grep -F "CKPT_INTERVAL=600" >/dev/null ||
    fail "slurmd log has no settings line for job $script_job"
note "ok"
