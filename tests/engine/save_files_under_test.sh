#!/usr/bin/env bash
# dump --save-files-under DIR: a shell reading a script-like file from DIR (as a batch shell
# reads slurmd's copy of the job script) is dumped, DIR is deleted, and the restored shell
# reads on from the same offset of a saved copy. Without the option the restore refuses,
# naming the missing file.
set -euo pipefail
engine=$1
work=$(mktemp -d /tmp/ckpt-savefiles-XXXXXX)
pid=
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; rm -rf "$work"' EXIT
mkdir "$work/spool"
seq 1 100 > "$work/spool/lines"
# Reads 10 lines, says so, waits for the go (a file), then reads the rest through the same fd.
cat > "$work/reader.sh" <<'SH'
exec 9<"$1"
for i in $(seq 1 10); do read -r line <&9; done
echo "$line" > "$2/first"
while [ ! -e "$2/go" ]; do sleep 0.05; done
sum=0
while read -r line <&9; do sum=$((sum + line)); done
echo "$sum" > "$2/rest"
SH
# The dump kills the tree; its pids must be free again before the restore.
wait_gone() {
    wait "$pid" 2>/dev/null || true
    for _ in $(seq 100); do pgrep -s "$pid" >/dev/null || return 0; sleep 0.05; done
    echo "session $pid still has processes after the dump" >&2
    exit 1
}
run_reader() {
    rm -f "$work/first" "$work/go" "$work/rest"
    # Nothing inherited above stdio (ctest's log, a job harness's pipe): a file open in the
    # tree that changes before the restore would be refused, as it should be.
    setsid python3 -c 'import os, sys; os.closerange(3, 65536); os.execvp("bash", ["bash"] + sys.argv[1:])' \
        "$work/reader.sh" "$work/spool/lines" "$work" </dev/null >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do [ -s "$work/first" ] && break; sleep 0.05; done
    [ "$(cat "$work/first")" = 10 ] || { echo "reader did not start" >&2; exit 1; }
}

run_reader
"$engine" dump -t "$pid" -D "$work/img" --save-files-under "$work/spool/"
wait_gone
mv "$work/spool" "$work/spool.gone"
"$engine" restore -D "$work/img" --detach --pidfile "$work/pid"
pid=$(cat "$work/pid")
touch "$work/go"
for _ in $(seq 200); do [ -s "$work/rest" ] && break; sleep 0.05; done
# 11 + ... + 100
[ "$(cat "$work/rest" 2>/dev/null)" = 4995 ] || { echo "restored reader summed '$(cat "$work/rest" 2>/dev/null)', not 4995" >&2; exit 1; }
echo "saved copy read from the right offset"

# Without the option the file is recorded by path, and its folder is gone at restore.
mv "$work/spool.gone" "$work/spool"
run_reader
"$engine" dump -t "$pid" -D "$work/img2"
wait_gone
pid=
rm -rf "$work/spool"
if "$engine" restore -D "$work/img2" --detach 2> "$work/err"; then
    echo "restore succeeded without the file" >&2
    exit 1
fi
grep -q "spool/lines" "$work/err" || { echo "error does not name the file: $(cat "$work/err")" >&2; exit 1; }
echo "save-files-under ok"
