#!/usr/bin/env bash
# CRIU's option names on ckpt-engine dump/restore: the accepted ones do what CRIU users
# expect (-o LOG and -vN log to a file, -R leaves the tree running, --restore-detached and
# --pidfile return with the root's pid, --link-remap and --manage-cgroups=ignore are taken,
# --action-script runs pre-dump and post-dump scripts, --file-locks saves held locks, which
# a dump without it refuses);
# the refused ones fail naming the option as "not supported yet", never "unknown option",
# before the tree is touched.
set -euo pipefail
engine=$1
work=$(mktemp -d /tmp/ckpt-criuopts-XXXXXX)
pid=
trap '[ -n "$pid" ] && { pkill -9 -P $pid; kill -9 $pid; } 2>/dev/null; rm -rf "$work"' EXIT

# A sleeper with only fds 0-2 (on /dev/null), whatever the calling shell has open.
start_sleeper() {
    (
        for fd in /proc/$BASHPID/fd/*; do
            n=${fd##*/}
            if [ "$n" -gt 2 ]; then eval "exec $n>&-"; fi
        done
        exec sleep 300
    ) </dev/null >/dev/null 2>&1 &
    pid=$!
    sleep 0.2
}
die() { echo "FAIL: $*" >&2; exit 1; }

start_sleeper

# Refused: non-zero exit, the option named, "not supported yet", no "unknown option", and
# the tree left alone.
for opt in --ext-unix-sk=123 --manage-cgroups \
           --manage-cgroups=soft; do
    for cmd in dump restore; do
        if [ $cmd = dump ]; then args=(-t "$pid" -D "$work/refused"); else args=(-D "$work/refused"); fi
        if "$engine" $cmd "${args[@]}" "$opt" > /dev/null 2> "$work/err"; then
            die "$cmd $opt was accepted"
        fi
        grep -qF -- "$opt is not supported yet" "$work/err" || die "$cmd $opt: $(cat "$work/err")"
        if grep -qi "unknown option" "$work/err"; then die "$cmd $opt: $(cat "$work/err")"; fi
    done
done
# --action-script is dump's only: restore refuses it by name.
if "$engine" restore -D "$work/refused" --action-script=true 2> "$work/err"; then die "restore --action-script was accepted"; fi
grep -qF -- "--action-script=true is not supported yet" "$work/err" || die "restore --action-script: $(cat "$work/err")"
kill -0 "$pid" || die "a refused dump harmed the tree"
[ ! -e "$work/refused" ] || [ -z "$(ls -A "$work/refused")" ] || die "a refused dump wrote images"

# Accepted: -v4 -o LOG, -t/-D in getopt's attached form, -R, --link-remap,
# --manage-cgroups=ignore. The log goes to the file, not stderr, and the tree runs on.
"$engine" -v4 -o "$work/dump.log" dump -t"$pid" -D"$work/img1" -R --link-remap --manage-cgroups=ignore \
    2> "$work/err" || die "dump with CRIU's options failed: $(cat "$work/err")"
kill -0 "$pid" || die "-R did not leave the tree running"
grep -q "engine\[[0-9]*\] info: dumped 1 processes of tree $pid" "$work/dump.log" \
    || die "-o LOG has no dump line: $(cat "$work/dump.log")"
if grep -q "info:" "$work/err"; then die "-o LOG: log lines still on stderr"; fi
# --leave-running, --tree, --images-dir, --log-file=LOG and -v (one level up: info).
"$engine" --log-file="$work/dump2.log" dump --tree "$pid" --images-dir "$work/img2" --leave-running -v \
    || die "dump with CRIU's long options failed"
kill -0 "$pid" || die "--leave-running did not leave the tree running"
grep -q "info: dumped 1 processes" "$work/dump2.log" || die "--log-file has no dump line"
# -v0 logs nothing at all.
"$engine" -v0 -o "$work/quiet.log" dump -t "$pid" -D "$work/img3" -R || die "dump -v0 failed"
[ ! -s "$work/quiet.log" ] || die "-v0 logged: $(cat "$work/quiet.log")"
# A log file that cannot be opened fails naming it.
if "$engine" -o "$work/no/such/dir/log" dump -t "$pid" -D "$work/img4" -R 2> "$work/err"; then
    die "dump with an unopenable log file succeeded"
fi
grep -qF "$work/no/such/dir/log" "$work/err" || die "log file error does not name it: $(cat "$work/err")"
kill -0 "$pid" || die "the tree died"

# --action-script: run with CRTOOLS_SCRIPT_ACTION=pre-dump before the tree is frozen and
# =post-dump once the images are written, the tree still frozen (a tracing stop); a script
# that fails fails the dump, which leaves the tree running and untraced and no inventory.
cat > "$work/action.sh" <<'SH'
state=$(awk '/^State:/ {print $2}' "/proc/$CRTOOLS_INIT_PID/status")
echo "$CRTOOLS_SCRIPT_ACTION $CRTOOLS_INIT_PID $CRTOOLS_IMAGE_DIR $state $(ls "$CRTOOLS_IMAGE_DIR" | grep -c '^inventory.img$')" >> "$1"
SH
"$engine" dump -t "$pid" -D "$work/img6" -R --action-script "sh $work/action.sh $work/actions" \
    || die "dump with --action-script failed"
printf 'pre-dump %s %s S 0\npost-dump %s %s t 1\n' "$pid" "$work/img6" "$pid" "$work/img6" > "$work/actions.want"
cmp -s "$work/actions" "$work/actions.want" || die "--action-script saw: $(cat "$work/actions")"
if "$engine" dump -t "$pid" -D "$work/img7" -R --action-script '[ "$CRTOOLS_SCRIPT_ACTION" != post-dump ]' \
    2> "$work/err"; then
    die "a dump whose post-dump script failed succeeded"
fi
grep -q "action script .* (post-dump) exited 1" "$work/err" || die "failed post-dump script: $(cat "$work/err")"
[ ! -e "$work/img7/inventory.img" ] || die "a dump whose post-dump script failed left an inventory"
kill -0 "$pid" || die "a failed post-dump script killed the tree"
sleep 0.1
grep -q '^TracerPid:[[:space:]]*0$' "/proc/$pid/status" || die "a failed post-dump script left the tree traced"

# A dump that kills the tree, then restore --restore-detached --pidfile: returns at once with
# the root's pid in the file and the root running.
"$engine" dump -t "$pid" -D "$work/img5" --link-remap --file-locks
wait "$pid" 2>/dev/null || true
old=$pid
pid=
"$engine" -v4 -o "$work/restore.log" restore -D "$work/img5" --restore-detached --pidfile "$work/pidfile" \
    --link-remap --manage-cgroups=ignore --file-locks || die "restore with CRIU's options failed"
pid=$(cat "$work/pidfile")
[ "$pid" = "$old" ] || die "--pidfile says $pid, the root was $old"
kill -0 "$pid" || die "--restore-detached: the restored root is not running"
grep -q "info: restored 1 processes of tree $pid" "$work/restore.log" || die "restore -o LOG: $(cat "$work/restore.log")"
kill -9 "$pid"
pid=

# A held lock: without --file-locks the dump fails saying so and the tree runs on; with it,
# the dump saves the lock.
(
    for fd in /proc/$BASHPID/fd/*; do
        n=${fd##*/}
        if [ "$n" -gt 2 ]; then eval "exec $n>&-"; fi
    done
    exec flock -x "$work/locked" sleep 300
) </dev/null >/dev/null 2>&1 &
pid=$!
for _ in $(seq 50); do cat /proc/$pid/fdinfo/* 2>/dev/null | grep "^lock:" >/dev/null && break; sleep 0.1; done
if "$engine" dump -t "$pid" -D "$work/img6" -R 2> "$work/err"; then die "a dump without --file-locks saved a held lock"; fi
grep -qF -- "--file-locks" "$work/err" || die "dump of a held lock: $(cat "$work/err")"
kill -0 "$pid" || die "a refused dump harmed the locking tree"
"$engine" dump -t "$pid" -D "$work/img6" -R --file-locks 2> "$work/err" || die "dump --file-locks: $(cat "$work/err")"
"$engine" show --json "$work/img6" > "$work/show.json"
grep -q '"locks"' "$work/show.json" || die "dump --file-locks recorded no lock"
echo "criu-options ok"
