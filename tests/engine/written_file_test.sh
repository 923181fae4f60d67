#!/usr/bin/env bash
# A file the tree writes (a job's log or output file) goes on growing after the dump until the
# process dies; the restore rolls it back to its size at the dump, and the restored writer
# writes the rest again: the file ends exactly as an uninterrupted run's, every line once.
# Damage to the file before that size (another writer, an edit) makes the restore refuse,
# naming the file, and leaves nothing running.
set -euo pipefail
engine=$1
work=$(mktemp -d /tmp/ckpt-written-XXXXXX)
pid=
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; rm -rf "$work"' EXIT

# 300 numbered lines, one every 10 ms, each flushed, through one fd held open; "done" at the end.
cat >"$work/writer.py" <<'PY'
import os, sys, time
os.closerange(3, 65536)
with open(sys.argv[1], "w") as f:
    for i in range(300):
        f.write("line %03d\n" % i)
        f.flush()
        time.sleep(0.01)
open(sys.argv[1] + ".done", "w").close()
PY
expected=$(for i in $(seq 0 299); do printf 'line %03d\n' "$i"; done)
lines() { wc -l <"$work/log"; }
start_writer() {
    rm -f "$work/log" "$work/log.done"
    setsid python3 "$work/writer.py" "$work/log" </dev/null >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 200); do [ -s "$work/log" ] && [ "$(lines)" -ge 50 ] && return; sleep 0.02; done
    echo "FAIL: the writer did not start" >&2
    exit 1
}
# Dumped while it runs on, then killed after it wrote more.
dump_and_lose() {
    "$engine" dump -t "$pid" -D "$1" --leave-running
    at_dump=$(lines)
    for _ in $(seq 200); do [ "$(lines)" -ge $((at_dump + 40)) ] && break; sleep 0.02; done
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
    [ ! -e "$work/log.done" ] || { echo "FAIL: the writer finished before it was killed" >&2; exit 1; }
}

start_writer
dump_and_lose "$work/img"
grown=$(lines)
"$engine" restore -D "$work/img" 2>"$work/restore.err" ||
    { echo "FAIL: restore: $(cat "$work/restore.err")" >&2; exit 1; }
[ -e "$work/log.done" ] || { echo "FAIL: the restored writer did not finish" >&2; exit 1; }
[ "$(cat "$work/log")" = "$expected" ] ||
    { echo "FAIL: the file after the restore is not the uninterrupted run's: $(uniq -d "$work/log" | sed -n 1,3p)" >&2; exit 1; }
echo "rolled back from $grown lines; the restored writer wrote the rest once"

# The bytes before the dump's size changed: refused.
start_writer
dump_and_lose "$work/img2"
printf 'X' | dd of="$work/log" bs=1 seek=5 conv=notrunc status=none
if "$engine" restore -D "$work/img2" 2>"$work/err2"; then
    echo "FAIL: restored a writer whose file was changed before its size at the dump" >&2
    exit 1
fi
grep -q "$work/log changed since the dump" "$work/err2" || { echo "FAIL: unclear error: $(cat "$work/err2")" >&2; exit 1; }
pgrep -f "$work/writer.py" >/dev/null && { echo "FAIL: a refused restore left the writer running" >&2; exit 1; }
echo "written-file ok"
