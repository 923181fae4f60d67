#!/usr/bin/env bash
# A job id used again by a new job (as after slurmctld's state was wiped): the folder of the
# earlier job of that id is not restored from and not written into. Job A takes a checkpoint
# of its batch step; its folder then stands as the folder of the id of job N, held until
# then (a new job, with its own incarnation). N runs its own script from the start, the
# earlier folder is moved aside whole (<id>.earlier-<A's incarnation>, sets intact) and N
# checkpoints into a new folder of its own.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)

old=$(submit "$work" --checkpoint-interval=1s -o "$work/old.out" \
    --wrap 'echo "old job $SLURM_JOB_ID started"; for i in $(seq 600); do sleep 0.1; done')
wait_for_line "$work/old.out" '^old job' 20
wait_for_set "$old" 0 30 >/dev/null
scancel "$old"
wait_jobs_done "$old"
no_agent_left "$old"
incarnation() { "$CKPT_JOB" list "$1" --root "$CKPT_ROOT" --json | sed -n 's/.*"incarnation": "\([^"]*\)".*/\1/p'; }
old_incarnation=$(incarnation "$old")
[ -n "$old_incarnation" ] || fail "job $old has no incarnation: $("$CKPT_JOB" list "$old" --root "$CKPT_ROOT" --json)"
sets=$("$CKPT_JOB" list "$old" --root "$CKPT_ROOT" --json | grep -o '"seq"' | wc -l)

new=$(submit "$work" --hold --checkpoint-interval=1s -o "$work/new.out" \
    --wrap 'echo "new job $SLURM_JOB_ID runs its own script"; sleep 3')
mv "$CKPT_ROOT/$old" "$CKPT_ROOT/$new"
note "job $old's folder ($sets sets, incarnation $old_incarnation) stands as job $new's"
scontrol release "$new"
wait_jobs_done "$new"
[ "$(job_field "$new" JobState)" = COMPLETED ] || fail "job $new: $(job_field "$new" JobState): $(cat "$work/new.out")"
grep -q "^new job $new runs its own script" "$work/new.out" && ! grep -q "restoring from\|^old job" "$work/new.out" ||
    fail "job $new did not start from its own script: $(cat "$work/new.out")"

aside=$CKPT_ROOT/$new.earlier-$old_incarnation
[ -f "$aside/index.h5" ] || fail "no $aside: $(ls "$CKPT_ROOT")"
[ "$(stat -c %U "$aside")" = "$TEST_USER" ] || fail "$aside: owner $(stat -c %U "$aside")"
cp -a "$aside" "$CKPT_ROOT/$old"
[ "$("$CKPT_JOB" list "$old" --root "$CKPT_ROOT" --json | grep -o '"seq"' | wc -l)" = "$sets" ] ||
    fail "the earlier job's sets were not kept: $("$CKPT_JOB" list "$old" --root "$CKPT_ROOT")"
"$CKPT_JOB" verify "$old" --root "$CKPT_ROOT" || fail "the earlier job's sets no longer verify"
rm -rf "${CKPT_ROOT:?}/$old"
new_incarnation=$(incarnation "$new")
[ -n "$new_incarnation" ] && [ "$new_incarnation" != "$old_incarnation" ] ||
    fail "job $new's folder has incarnation '$new_incarnation' (the earlier one: $old_incarnation)"
[ -n "$(current_set "$new")" ] || fail "job $new took no set of its own"
grep -q "moved aside to $aside" "$CKPT_ROOT/$new"/agents/step-batch.node-0.log ||
    fail "the agent did not say where the earlier folder went: $(cat "$CKPT_ROOT/$new"/agents/*.log)"
no_agent_left "$new"
note "ok"
