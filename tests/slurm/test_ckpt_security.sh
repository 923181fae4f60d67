#!/usr/bin/env bash
# Security: the job's checkpoint folder belongs to its user with mode 0700; another user's
# ckpt-job can neither list, show, restore, remove nor trigger its sets; an image edited
# to claim another identity is refused by the restore the plugin runs, and by verify.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
script=$(dirname "$SERIAL_JOB")/serial-job.sbatch
OTHER=ckpttest2
other_work=$USER_WORK/../$OTHER
mkdir -p "$other_work"
chown "$OTHER:$OTHER" "$other_work"

job=$(submit "$work" --export=ALL,SERIAL_JOB="$SERIAL_JOB" --checkpoint-interval=2s "$script" 2000 40)
seq=$(wait_for_set "$job" 0 30)
scancel "$job"
wait_jobs_done "$job"
no_agent_left "$job"

[ "$(stat -c %U:%a "$CKPT_ROOT/$job")" = "$TEST_USER:700" ] ||
    fail "job folder is $(stat -c %U:%a "$CKPT_ROOT/$job"), not $TEST_USER:700"
for cmd in "list $job" "show $job" "verify $job" "status $job" "restore $job" "checkpoint $job" "rm $job" "rm $job --set $seq"; do
    # shellcheck disable=SC2086
    if msg=$(AS_USER=$OTHER ckpt_job_in "$other_work" $cmd 2>&1); then
        fail "$OTHER ran 'ckpt-job $cmd' on $TEST_USER's job: $msg"
    fi
    grep -q "belong to $TEST_USER" <<<"$msg" || fail "'ckpt-job $cmd' as $OTHER: unexpected message: $msg"
done
if AS_USER=$OTHER ckpt_job_in "$other_work" list | grep "^$job " >/dev/null; then
    fail "$OTHER's 'ckpt-job list' shows $TEST_USER's job $job"
fi
ckpt_job_in "$work" verify "$job" || fail "$TEST_USER's sets were damaged"
note "$OTHER refused for list, show, verify, status, restore, checkpoint and rm"

# The user forges their own images to claim root: the engine's --restore-as refuses them.
member=$CKPT_ROOT/$job/set-$(printf %06d "$seq")/member-0
forged=$work/forged
IMAGE_CLAIM=$(stage "$IMAGE_CLAIM")
runuser -u "$TEST_USER" -- cp -a "$member" "$forged"
runuser -u "$TEST_USER" -- "$IMAGE_CLAIM" "$forged" 0 0 || fail "image_claim failed"
# --detach: should the engine wrongly accept, the test stops what it restored.
if msg=$("$CKPT_ENGINE" restore -D "$forged" --new-pidns --detach --pidfile "$work/forged.pid" \
    --restore-as "$(id -u "$TEST_USER"):$(id -g "$TEST_USER")" 2>&1); then
    kill -KILL "$(cat "$work/forged.pid")" 2>/dev/null || true
    fail "an image claiming uid 0 was restored as $TEST_USER"
fi
grep -qiE "uid|owner|belong" <<<"$msg" || fail "forged image refused without saying why: $msg"
note "forged image refused: $msg"
# The same edit inside the store is caught by verify, so the plugin never restores it.
runuser -u "$TEST_USER" -- "$IMAGE_CLAIM" "$member" 0 0
if msg=$(ckpt_job_in "$work" verify "$job" --set "$seq" 2>&1); then
    fail "verify passed an edited member image"
fi
grep -qE "(inventory|core-[0-9]+)\.img" <<<"$msg" || fail "verify did not name the edited file: $msg"
note "ok"
