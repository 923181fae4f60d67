#!/usr/bin/env bash
# Fencing: a job's agent (run 0) is frozen while it writes a set; meanwhile an agent of a
# newer run (restart count 1, as after a requeue while the old copy still runs on a
# partitioned node) claims the job and commits its own set. When the stale agent wakes up,
# its commit is refused, its set ends failed, its next sets are refused, and the newer run's
# set is intact and current.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
script=$(dirname "$SERIAL_JOB")/serial-job.sbatch
AGENT=$(sed -n 's/.* agent=\([^ ]*\).*/\1/p' "$(dirname "$SLURM_CONF")/plugstack.conf")
[ -x "$AGENT" ] || fail "no agent= in the cluster's plugstack.conf"

job=$(submit "$work" --export=ALL,SERIAL_JOB="$SERIAL_JOB" --checkpoint-interval=2s "$script" 2000 40)
out=$work/serial-job-$job.out
first=$(wait_for_set "$job" 0 30)
# The agent's unprivileged half, which writes the sets (its privileged half is root's).
agent=$(pgrep -u "$TEST_USER" -f -- "ckpt-agent run --job $job ") || fail "no agent of job $job"
request=$CKPT_ROOT/$job/agents/step-batch.request
# Freeze the agent once its node reported the next set, before it commits it (it looks for
# reports every 150 ms).
deadline=$((SECONDS + 20))
while :; do
    seq=$(sed -n 's/^seq //p' "$request" 2>/dev/null || true)
    if [ -n "$seq" ] && [ "$seq" -gt "$first" ] && [ -e "$CKPT_ROOT/$job/agents/step-batch.set-$seq.node-0" ]; then
        kill -STOP "$agent"
        # Too late if it committed already: let it go on and catch the next set.
        "$CKPT_JOB" show "$job" --set "$seq" --root "$CKPT_ROOT" | grep "state: writing" >/dev/null && break
        kill -CONT "$agent"
        first=$seq
    fi
    ((SECONDS < deadline)) || fail "the agent asked for no set after $first"
    sleep 0.005
done
cleanup() {
    kill -CONT "$agent" 2>/dev/null || true
    [ -z "${newer:-}" ] || kill "$newer" 2>/dev/null || true
    [ -z "${feeder:-}" ] || kill "$feeder" 2>/dev/null || true
    scancel "$job" 2>/dev/null || true
}
trap cleanup EXIT
note "run 0's agent (pid $agent) frozen while set $seq is written"

pid=$(sed -n 's/^start: .* pid \([0-9]*\)$/\1/p' "$out" | sed -n 1p)
uid=$(id -u "$TEST_USER")
gid=$(id -g "$TEST_USER")
# The newer run's agent, fed the job's task pid as slurmstepd would.
exec {feed}< <(echo "$pid 0"; exec sleep 120 2>/dev/null)
feeder=$!
"$AGENT" run --job "$job" --step 4294967291 --node-id 0 --nodes 1 --node-name newer --tasks 1 \
    --local-tasks 1 --interval 1 --root "$CKPT_ROOT" --keep 5 --engine "$CKPT_ENGINE" \
    --uid "$uid" --gid "$gid" --user "$TEST_USER" --restart-count 1 --task-fd "$feed" \
    >"$work/newer.log" 2>&1 &
newer=$!
exec {feed}<&-
deadline=$((SECONDS + 30))
until "$CKPT_JOB" show "$job" --root "$CKPT_ROOT" --json 2>/dev/null |
    grep -q '"state": "committed", "trigger": "interval", "current": true, "[^}]*"restart_count": 1'; do
    ((SECONDS < deadline)) || fail "the newer run committed no set: $(cat "$work/newer.log")"
    pause
done
newest=$(current_set "$job")
kill "$newer"
wait "$newer" || true
note "run 1 claimed the job and committed set $newest"

kill -CONT "$agent"
log=$CKPT_ROOT/$job/agents/step-batch.node-0.log
# Refused by the fence, or earlier: the newer run's claim failed the abandoned set and its
# retention removed the folder, so the stale commit finds its files gone.
wait_for_line "$log" "set $seq failed: .*(run 1 of the job owns its checkpoints now|set-0*$seq/member-0/.*No such file)" 15
grep -q "refused to begin a set: this writer is run 0 but run 1 of the job owns its checkpoints now" "$log" ||
    wait_for_line "$log" "refused to begin a set: this writer is run 0 but run 1" 10
# Failed, or already removed by the newer run's retention (failed sets older than its set).
show=$("$CKPT_JOB" show "$job" --set "$seq" --root "$CKPT_ROOT" 2>&1 || true)
grep -qE "state: failed|no set $seq\$" <<<"$show" || fail "the stale run's set $seq is not failed: $show"
[ "$(current_set "$job")" = "$newest" ] || fail "current set changed from $newest to $(current_set "$job")"
"$CKPT_JOB" verify "$job" --set "$newest" --root "$CKPT_ROOT" || fail "the newer run's set $newest does not verify"
"$CKPT_JOB" list "$job" --root "$CKPT_ROOT" | grep "run 1," >/dev/null || fail "the index forgot run 1"

scancel "$job"
wait_jobs_done "$job"
trap - EXIT
cleanup
no_agent_left "$job"
note "ok (stale set $seq refused, set $newest of run 1 intact)"
