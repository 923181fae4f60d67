#!/usr/bin/env bash
# `ckpt-engine show DIR --json` decodes every image of a real dump into one JSON document
# that names the dumped process; `show` without --json prints every image; a corrupt image
# makes it fail with the file's name.
set -euo pipefail
engine=$1
work=$(mktemp -d /tmp/ckpt-show-XXXXXX)
sleep 300 </dev/null >/dev/null 2>&1 &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 0.2
"$engine" dump -t "$pid" -D "$work/img" --leave-running
"$engine" show "$work/img" --json > "$work/show.json"
python3 - "$work/show.json" "$pid" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
pid = int(sys.argv[2])
images = doc["images"]
assert doc["schema"] == 1, doc.get("schema")
for name in ("inventory.img", "files.img", f"core-{pid}.img", f"mm-{pid}.img", f"pagemap-{pid}.img", f"fds-{pid}.img"):
    assert name in images, f"{name} missing from show --json"
assert images["inventory.img"]["root_pid"] == pid
assert images[f"core-{pid}.img"]["threads"][0]["tid"] == pid
assert any(v.get("name") == "[stack]" for v in images[f"mm-{pid}.img"]["vmas"])
print("show --json ok")
PY
"$engine" show "$work/img" > "$work/show.txt"
grep -q "== $work/img/core-$pid.img (core)" "$work/show.txt"
printf 'garbage' >> "$work/img/mm-$pid.img"
if "$engine" show "$work/img" > /dev/null 2> "$work/err"; then
    echo "show accepted a corrupt image" >&2
    exit 1
fi
grep -q "mm-$pid.img" "$work/err"
echo "show ok"
