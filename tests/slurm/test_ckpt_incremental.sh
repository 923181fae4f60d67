#!/usr/bin/env bash
# Incremental sets (full_every=4 on the nodes, --checkpoint-keep=2): incr_job (the serial
# example's script running tests/slurm/incr_job.c: 32 MiB filled once, a few pages changed
# per step; its answer covers the whole block) is checkpointed every 5 s; its sets go full, then three incremental ones each on the one
# before (each far smaller than a full one: the job's processes, the user's, got their
# write trackers), full again, ... Retention keeps the newest two committed sets and every
# set their chains need (a set beyond the two stays while a kept set is incremental on it;
# the older chains are freed, files and index alike). Once the newest set is the first
# incremental one after a full one, its node is killed (the next two would be incremental
# too): the job, requeued on another node, restores an incremental set (the engine reads
# the pages not written since from its parents) and writes the uninterrupted answer. Then
# `ckpt-job verify` passes, and reports a damaged or missing parent by the parent's name.
. "$(dirname "$0")/lib.sh"
work=$(user_scratch)
script=$(dirname "$SERIAL_JOB")/serial-job.sbatch
INCR_JOB=$(stage "${6:?usage: $0 CLUSTER SERIAL_JOB CKPT_JOB CKPT_ENGINE IMAGE_CLAIM INCR_JOB [local]}")
# With "local": two-level storage too (local_dir=): each member is dumped into the node's
# folder against its parent's local copy, drained, and its chain is read in the shared root;
# and compressed (compress=1): every member's page data stored block by block, zstd frames or
# as is, the page maps recording the stored blocks.
if [ "${7:-}" = local ]; then with_local_dir full_every=4 compress=1; else with_plugin_args full_every=4; fi

# With compress=: every page map with page data in the committed sets records its stored
# blocks (without: none does).
COMPRESSED=no
[ "${7:-}" != local ] || COMPRESSED=yes
check_stored_blocks() {
    local job=$1 sets=$2 seq
    for seq in $(awk '{print $1}' <<<"$sets"); do
        "$CKPT_ENGINE" show "$(set_dir "$job" "$seq")/member-0" --json | python3 -c '
import json, sys
want, seq = sys.argv[1] == "yes", sys.argv[2]
images = json.load(sys.stdin)["images"]
maps = {n: m for n, m in images.items() if n.startswith("pagemap-") and int(m.get("pages_bytes", 0))}
if not maps:
    sys.exit("set " + seq + ": no page map with page data")
for n, m in maps.items():
    blocks = len(m.get("blocks", []))
    if bool(blocks) != want:
        sys.exit("set %s: %s records %d stored blocks, compress= %s" % (seq, n, blocks, "given" if want else "not given"))
' "$COMPRESSED" "$seq" || fail "job $job: set $seq is not stored as compress= asks"
    done
}

# "SEQ PARENT BYTES" of each committed set of JOB in its index, as root.
committed_sets() {
    set_fields "$1" seq state parent_set bytes | awk '$2 == "committed" { print $1, $3, $4 }'
}
# The parent of set SEQ in the list $2 ("" if not there).
parent_in() { awk -v s="$1" '$1 == s { print $2 }' <<<"$2"; }
set_dir() { printf '%s/%s/set-%06d' "$CKPT_ROOT" "$1" "$2"; }

# Waits until the newest committed set's chain of incremental sets is LEN long; prints the
# committed sets then.
wait_for_chain() {
    local job=$1 len=$2 after=$3 deadline sets newest n p
    deadline=$((SECONDS + 90))
    while :; do
        sets=$(committed_sets "$job")
        newest=$(tail -1 <<<"$sets" | awk '{print $1}')
        if [ -n "$newest" ] && [ "$newest" -gt "$after" ]; then
            n=0 p=$(parent_in "$newest" "$sets")
            while [ -n "$p" ] && [ "$p" != 0 ]; do
                n=$((n + 1))
                p=$(parent_in "$p" "$sets")
            done
            if [ "$n" = "$len" ]; then
                echo "$sets"
                return 0
            fi
        fi
        ((SECONDS < deadline)) || fail "job $job: no committed set with a chain of $len within 90 s: $sets; $(tail -5 "$CKPT_ROOT/$job"/agents/step-batch.node-0.log)"
        sleep 0.2
    done
}

# Every committed set's folder, and its parent's, is there; set folders older than the
# oldest set in the index are gone; an incremental set saved under a quarter of its full
# set's bytes.
check_retention() {
    local job=$1 sets=$2 seq parent bytes oldest d full
    oldest=$(head -1 <<<"$sets" | awk '{print $1}')
    while read -r seq parent bytes; do
        if [ "$parent" = 0 ]; then
            full=$bytes
        elif [ -n "${full:-}" ] && [ $((bytes * 4)) -ge "$full" ]; then
            fail "incremental set $seq has $bytes bytes, its chain's full set $full: not incremental ($sets)"
        fi
        [ -d "$(set_dir "$job" "$seq")/member-0" ] || fail "set $seq is in the index but its folder is gone"
        [ "$parent" = 0 ] || [ -n "$(parent_in "$parent" "$sets")" ] ||
            fail "set $seq is incremental on set $parent, which retention removed: $sets"
        [ "$parent" = 0 ] || [ -s "$(set_dir "$job" "$parent")/member-0/inventory.img" ] ||
            fail "set $seq is incremental on set $parent, whose images are gone"
    done <<<"$sets"
    for d in "$CKPT_ROOT/$job"/set-*; do
        seq=$((10#${d##*/set-}))
        [ "$seq" -ge "$oldest" ] || fail "$d is still there (older than every set the index keeps: $sets)"
    done
}

as_user_in "$work" "$INCR_JOB" 1600 0 "$work/expected.txt" >/dev/null
job=$(submit "$work" --export=ALL,SERIAL_JOB="$INCR_JOB" --checkpoint-interval=5s --checkpoint-keep=2 \
    "$script" 1600 50)
out=$work/serial-job-$job.out
wait_for_line "$out" '^job .* run 0 on n[0-9], checkpoint interval 5 s' 30
node=$(job_node "$job")

# A chain of two incremental sets: all three sets stay (keep=2 and the full set they need).
sets=$(wait_for_chain "$job" 2 0)
[ "$(wc -l <<<"$sets")" -ge 3 ] || fail "job $job: retention removed a set the kept ones need: $sets"
check_retention "$job" "$sets"
check_stored_blocks "$job" "$sets"
note "job $job on $node: chain $(tr '\n' ' ' <<<"$sets")"

# The next chain: a full set and one incremental on it. Once its retention ran, the job's
# agents are held (SIGSTOP: no set begins or commits from then on; finding every process of
# the node to kill takes a while on a loaded machine) and the node is killed: the newest
# set is incremental (the next two would be too), and nothing writes the store until Slurm
# requeued the job and its new run committed a set.
newest=$(tail -1 <<<"$sets" | awk '{print $1}')
sets=$(wait_for_chain "$job" 1 "$newest")
deadline=$((SECONDS + 10))
while [ -d "$(set_dir "$job" 1)" ] && ((SECONDS < deadline)); do sleep 0.2; done
agents=$(pgrep -f -- "ckpt-agent run --job $job .*--root $CKPT_ROOT " || true)
[ -n "$agents" ] || fail "job $job: no agent found"
# shellcheck disable=SC2086
kill -STOP $agents
note "job $job: sets $(tr '\n' ' ' <<<"$sets"); agents held, killing $node"
KILLED_NODE=$node
bash "$HERE/cluster.sh" kill-node "$CKPT_CLUSTER_DIR" "$node"
sets=$(committed_sets "$job")
before=$sets
[ ! -d "$(set_dir "$job" 1)" ] || fail "set 1 is still there once no kept set needs it: $sets"
check_retention "$job" "$sets"
as_user_in "$work" "$CKPT_JOB" verify "$job" --root "$CKPT_ROOT" || fail "job $job: sets do not verify"
note "job $job: sets $(tr '\n' ' ' <<<"$sets") (set 1 freed)"

# The newest set is incremental: the restore is from an incremental set.
JOB_TIMEOUT=150 wait_jobs_done "$job"
[ "$(job_field "$job" JobState)" = COMPLETED ] || fail "job $job: $(job_field "$job" JobState): $(cat "$out")"
[ "$(job_field "$job" Restarts)" = 1 ] || fail "job $job: Restarts=$(job_field "$job" Restarts)"
restored=$(sed -n "s|.*restoring from $CKPT_ROOT/$job/set-0*\([0-9]*\)/member-0.*|\1|p" "$out" | sed -n 1p)
[ -n "$restored" ] || fail "job $job: no restore line: $(cat "$out")"
[ "$(parent_in "$restored" "$before" | awk '{print $1}')" -gt 0 ] 2>/dev/null ||
    fail "job $job restored set $restored, which is not incremental (sets at the kill: $before)"
check_resumed_output "$out" "$work/answer-$job.txt" "$work/expected.txt"
no_agent_left "$job"
note "resumed from incremental set $restored"

# verify: every set passes; then a parent's page data changed, and a parent removed.
as_user_in "$work" "$CKPT_JOB" verify "$job" --root "$CKPT_ROOT" || fail "job $job: sets do not verify after the restart"
sets=$(committed_sets "$job")
child=$(awk '$2 != 0 { print $1 }' <<<"$sets" | tail -1)
[ -n "$child" ] || fail "job $job: no incremental set left to check: $sets"
parent=$(parent_in "$child" "$sets")
pdir=$(set_dir "$job" "$parent")
pages=$(find "$pdir/member-0" -maxdepth 1 -name 'pages-*' -size +0 | sed -n 1p)
[ -n "$pages" ] || fail "$pdir/member-0 has no page data: $(ls "$pdir/member-0")"
python3 - "$pages" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    b = f.read(1)
    f.seek(0)
    f.write(bytes([b[0] ^ 0xff]))
PY
msg=$(as_user_in "$work" "$CKPT_JOB" verify "$job" --set "$child" --root "$CKPT_ROOT" 2>&1) &&
    fail "set $child verifies with its parent set $parent damaged: $msg"
grep -q "parent set $parent" <<<"$msg" || fail "verify of set $child does not name its damaged parent set $parent: $msg"
mv "$pdir" "$CKPT_ROOT/$job/moved-away"
msg=$(as_user_in "$work" "$CKPT_JOB" verify "$job" --set "$child" --root "$CKPT_ROOT" 2>&1) &&
    fail "set $child verifies with its parent set $parent gone: $msg"
grep -q "set-$(printf %06d "$parent")\|parent set $parent" <<<"$msg" ||
    fail "verify of set $child does not name its missing parent set $parent: $msg"
note "verify: $(tail -1 <<<"$msg")"

trap - EXIT
restore_plugstack
note "ok (job $job: incremental chains kept and freed, $node killed, resumed from incremental set $restored)"
