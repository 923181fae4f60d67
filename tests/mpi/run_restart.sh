#!/bin/bash
# Checkpoint and restart of a split MPI run, outside Slurm:
#   run_restart.sh [--incremental SETS] MPIEXEC UPPER_DIR COORD RESTORER ENGINE NRANKS RESTARTS PROGRAM [ARGS...]
# 1. the program alone (Open MPI only): the expected output;
# 2. through libckpt_mpi while ckpt-mpi-coord quiesces the ranks once, dumps them (lower
#    halves left out) and kills them, as a node failure would;
# 3. RESTARTS times: a new mpirun of ckpt-mpi-restore restores every rank from the newest set
#    and the ranks go on with a fresh lower half; each restart but the last is itself
#    checkpointed and killed again.
# The last run must print exactly what the program alone printed, and none of the restarts
# may have started the program over (rank 0 says "<program>: started" on stderr at start).
# With --incremental SETS, each checkpointed run is dumped SETS times before the kill, every
# set after its first saving only the pages written since the set before it, and each restart
# is made from the newest, incremental set.
set -u
sets=1 incremental=()
if [ "${1:-}" = --incremental ]; then
    sets=$2 incremental=(--incremental)
    shift 2
fi
mpiexec=$1 upper=$2 coord=$3 restorer=$4 engine=$5 n=$6 restarts=$7
shift 7
prog=("$@")
work=$(mktemp -d)
trap '[ -n "${KEEP_WORK:-}" ] || rm -rf "$work"' EXIT
. "$(dirname "$0")/coord.sh"
mkdir -m 700 "$work/sets"
fail() {
    echo "FAIL: $*"
    for f in "$work"/*.out "$work"/*.err; do [ -s "$f" ] && { echo "--- $(basename "$f")"; head -40 "$f"; }; done
    exit 1
}
ckpt_env=(-x LD_LIBRARY_PATH="$upper${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" -x CKPT_MPI_CONTROL="$work/ctl/sock")
# Checkpoints after a while, then kills the ranks; $1: what the run is called.
checkpoint_once() {
    start_coord "coord-$1" 200 "$coord" --cycles "$sets" --interval-ms 300 --timeout-ms 30000 --dump "$work/sets" \
        --engine "$engine" "${incremental[@]}" --kill-after-dump
}

# Generous limits: 4 ranks on 2 busy cores (ctest -j2 beside another MPI test) once took more
# than 80 s for a run that takes 5 s alone; they only end a hang.
timeout 200 "$mpiexec" -n "$n" --oversubscribe "${prog[@]}" >"$work/plain.out" 2>"$work/plain.err" ||
    fail "Open MPI alone failed"
[ -s "$work/plain.out" ] || fail "no output from the program alone"

checkpoint_once first
timeout 200 "$mpiexec" -n "$n" --oversubscribe "${ckpt_env[@]}" "${prog[@]}" >"$work/first.out" 2>"$work/first.err"
wait $coord_pid || fail "the first run was not checkpointed"
grep -q "^killed the ranks" "$work/coord-first.out" || fail "the coordinator did not kill the ranks"
grep -q ": started$" "$work/first.err" || fail "the program does not say it started"
grep -q "ok" "$work/first.out" && fail "the first run finished before its checkpoint (make it longer)"

for r in $(seq "$restarts"); do
    # The run's sets move aside as one folder (an incremental set names its parents beside
    # it); the next checkpointed run dumps into a new one.
    mv "$work/sets" "$work/used-$r"
    mkdir -m 700 "$work/sets"
    set_dir="$work/used-$r/set-$(cat "$work/used-$r/latest")"
    if [ "$sets" -gt 1 ]; then
        # Each rank's page map names its parent dump (the same rank in the set before) and
        # reads some of its pages from there: truly incremental.
        for ((k = 0; k < n; k++)); do
            "$engine" show "$set_dir/rank-$k" --json >"$work/show.json" ||
                fail "restart $r: ckpt-engine show failed on rank $k of $(basename "$set_dir")"
            python3 - "$work/show.json" "set-$((sets - 1))/rank-$k" <<'PY' ||
import json, sys
images = json.load(open(sys.argv[1]))["images"]
maps = [v for k, v in images.items() if k.startswith("pagemap-")]
sys.exit(not maps or not all(m.get("parent_dir", "").endswith(sys.argv[2]) and m.get("chain_length", 0) >= 1 and
                             any(run.get("in_parent") for run in m.get("runs", [])) for m in maps))
PY
                fail "restart $r: rank $k of $(basename "$set_dir") is not incremental on set $((sets - 1))"
        done
    fi
    extra=()
    if [ "$r" -lt "$restarts" ]; then
        checkpoint_once "restart-$r"
        extra=(-x CKPT_MPI_CONTROL="$work/ctl/sock")
    fi
    timeout 200 "$mpiexec" -n "$n" --oversubscribe -x LD_LIBRARY_PATH="$upper${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        -x CKPT_MPI_TRACE_INIT=1 "${extra[@]}" "$restorer" --images "$set_dir" --new-pidns \
        >"$work/restart-$r.out" 2>"$work/restart-$r.err"
    rc=$?
    traced=$(grep -oE "ckpt-mpi: rank [0-9]+ of $n: upper half $upper/[^ ]+, lower half /[^ ]+ \(namespace [0-9]+\)" \
        "$work/restart-$r.err" | sort -u | wc -l)
    [ "$traced" = "$n" ] || fail "restart $r: $traced of $n ranks loaded a fresh lower half"
    grep -q ": started$" "$work/restart-$r.err" && fail "restart $r started the program over"
    if [ "$r" -lt "$restarts" ]; then
        wait $coord_pid || fail "restart $r was not checkpointed again"
        grep -q "^killed the ranks" "$work/coord-restart-$r.out" || fail "restart $r: the ranks were not killed"
    else
        [ "$rc" = 0 ] || fail "restart $r failed (exit $rc)"
        cmp -s "$work/plain.out" "$work/restart-$r.out" || fail "restart $r printed something else than the program alone"
    fi
done
cat "$work/restart-$restarts.out"
echo "restarted $restarts times from checkpoints (lower halves left out), same output as Open MPI alone ($n ranks)"
