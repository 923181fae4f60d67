#!/bin/bash
# hpcc (the HPC Challenge benchmark as Debian packages it: an unmodified MPI application) with
# a small input, checked by its own verification (HPL residual, PTRANS, RandomAccess, STREAM,
# FFT). Timings differ from run to run, so runs are compared by their verification results.
#   run_hpcc.sh split   MPIEXEC UPPER_DIR HPCC NRANKS
#       hpcc with Open MPI alone, then through libckpt_mpi; both must pass alike
#   run_hpcc.sh quiesce MPIEXEC UPPER_DIR HPCC NRANKS COORD MIN_CYCLES
#       as split, while COORD (ckpt-mpi-coord) quiesces and resumes the ranks of the second
#       run every 100 ms, at least MIN_CYCLES times
#   run_hpcc.sh restart MPIEXEC UPPER_DIR HPCC NRANKS COORD RESTORER ENGINE RESTARTS
#       as split, but the second run is checkpointed (lower halves left out) and killed; a new
#       mpirun of RESTORER restores it from the images, RESTARTS times (each restart but the
#       last is checkpointed and killed again); the last must finish and pass
# Each run works in a folder of its own (hpcc reads hpccinf.txt from its working folder and
# appends to hpccoutf.txt there).
set -u
mode=$1 mpiexec=$2 upper=$3 hpcc=$4 n=$5
shift 5
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/coord.sh"

fail() {
    echo "FAIL: $*"
    for f in "$work"/*.out "$work"/*.err "$work"/*/hpccoutf.txt; do
        [ -s "$f" ] && { echo "--- ${f#"$work"/}"; tail -40 "$f"; }
    done
    exit 1
}

. "$(dirname "$0")/hpcc_lib.sh"
input() { hpcc_input "$1" "$n"; }
# hpcc's own verification passed in the run in folder $1 (named $2).
check_passed() { hpcc_check_passed "$1/hpccoutf.txt" "$1.verdicts" "$2"; }
# The second run's verification results are the plain run's (the difference shown if not).
same_verdicts() {
    local diff
    diff=$(diff "$work/plain.verdicts" "$work/ckpt.verdicts") || fail "the verification results differ:" $'\n'"$diff"
}

# run <name> [mpirun args...]: hpcc in $work/<name>, output to $work/<name>.{out,err,rc}.
run() {
    local name=$1
    shift
    input "$work/$name"
    (cd "$work/$name" && timeout 100 "$mpiexec" -n "$n" --oversubscribe "$@" "$hpcc") \
        >"$work/$name.out" 2>"$work/$name.err"
    echo $? >"$work/$name.rc"
}

# check_traced RUN [NAMESPACE]: every rank of RUN ran on our upper half over the real libmpi
# (loaded in the dlmopen namespace NAMESPACE, a regex: a restored rank loads a fresh one).
check_traced() {
    local traced
    traced=$(grep -oE "ckpt-mpi: rank [0-9]+ of $n: upper half $upper/[^ ]+, lower half /[^ ]+ \(namespace ${2:-1}\)" \
        "$work/$1.err" | sort -u | wc -l)
    [ "$traced" = "$n" ] || fail "$1: $traced of $n ranks report running through libckpt_mpi"
}

library_path="$upper${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ckpt_env=(-x LD_LIBRARY_PATH="$library_path" -x CKPT_MPI_TRACE_INIT=1)

run plain
[ "$(cat "$work/plain.rc")" = 0 ] || fail "hpcc with Open MPI alone failed (exit $(cat "$work/plain.rc"))"
grep -q "^ckpt-mpi:" "$work/plain.err" && fail "the plain run went through libckpt_mpi"
check_passed "$work/plain" "Open MPI alone"

case $mode in
split)
    run ckpt "${ckpt_env[@]}"
    [ "$(cat "$work/ckpt.rc")" = 0 ] || fail "hpcc through libckpt_mpi failed (exit $(cat "$work/ckpt.rc"))"
    check_traced ckpt
    check_passed "$work/ckpt" "through libckpt_mpi"
    same_verdicts
    echo "hpcc verification passed with Open MPI alone and through libckpt_mpi ($n ranks)"
    ;;
quiesce)
    coord=$1 min_cycles=$2
    # Not back to back: hpcc times its latency tests, a rank parked every few ms makes them
    # crawl. A cycle every 100 ms still lands in every section.
    start_coord coord 110 "$coord" --min-cycles "$min_cycles" --interval-ms 100 --timeout-ms 30000
    run ckpt "${ckpt_env[@]}" -x CKPT_MPI_CONTROL="$work/ctl/sock"
    wait $coord_pid
    coord_rc=$?
    sed 's/^/  coordinator: /' "$work/coord.out" "$work/coord.err"
    [ "$(cat "$work/ckpt.rc")" = 0 ] || fail "hpcc through libckpt_mpi failed (exit $(cat "$work/ckpt.rc"))"
    check_traced ckpt
    [ "$coord_rc" = 0 ] || fail "the coordinator failed (exit $coord_rc)"
    check_passed "$work/ckpt" "while quiesced"
    same_verdicts
    cycles=$(grep -oE '^quiesce: [0-9]+ cycles' "$work/coord.out" | grep -oE '[0-9]+')
    echo "hpcc verification passed with Open MPI alone and while quiesced ${cycles:-0} times ($n ranks)"
    ;;
restart)
    coord=$1 restorer=$2 engine=$3 restarts=$4
    mkdir -m 700 "$work/sets" "$work/restorer"
    # Checkpoints once, after SECONDS ($2) of the run named $1, and kills the ranks as a node
    # failure would.
    checkpoint_once() {
        start_coord "coord-$1" 110 "$coord" --cycles 1 --interval-ms "$2" --timeout-ms 30000 --dump "$work/sets" \
            --engine "$engine" --kill-after-dump
    }
    checkpointed() {  # the run $1 was checkpointed and killed before hpcc finished
        wait $coord_pid || fail "$1 was not checkpointed"
        grep -q "^killed the ranks" "$work/coord-$1.out" || fail "$1: the coordinator did not kill the ranks"
        grep -q "End of HPC Challenge tests" "$work/ckpt/hpccoutf.txt" && fail "hpcc finished before $1's checkpoint"
    }
    # The first checkpoint a second in (in the MPI RandomAccess section, receives pending);
    # restarted runs but the last are checkpointed again 3 s after they connect.
    checkpoint_once ckpt 1000
    run ckpt "${ckpt_env[@]}" -x CKPT_MPI_CONTROL="$work/ctl/sock"
    check_traced ckpt
    checkpointed ckpt
    for r in $(seq "$restarts"); do
        mv "$work/sets/set-$(cat "$work/sets/latest")" "$work/sets/restart-$r"
        extra=()
        if [ "$r" -lt "$restarts" ]; then
            checkpoint_once "restart-$r" 3000
            extra=(-x CKPT_MPI_CONTROL="$work/ctl/sock")
        fi
        # The restored ranks go on in their own working folder ($work/ckpt); the restorer's
        # is another one, so that nothing relies on it.
        (cd "$work/restorer" && timeout 100 "$mpiexec" -n "$n" --oversubscribe -x LD_LIBRARY_PATH="$library_path" \
            -x CKPT_MPI_TRACE_INIT=1 "${extra[@]}" "$restorer" --images "$work/sets/restart-$r" --new-pidns) \
            >"$work/restart-$r.out" 2>"$work/restart-$r.err"
        rc=$?
        check_traced "restart-$r" "$((r + 1))"
        if [ "$r" -lt "$restarts" ]; then
            checkpointed "restart-$r"
        else
            [ "$rc" = 0 ] || fail "restart $r failed (exit $rc)"
        fi
    done
    [ -e "$work/restorer/hpccoutf.txt" ] && fail "a restored rank wrote in the restorer's folder"
    check_passed "$work/ckpt" "after the restarts"
    # The sections a checkpoint fell in timed themselves across a restart with MPI_Wtime ("Real
    # time"; their "CPU time" is the process's, which a restored process counts anew).
    grep -qE "Real time used = -" "$work/ckpt/hpccoutf.txt" && fail "MPI_Wtime went back at a restart"
    same_verdicts
    echo "hpcc verification passed with Open MPI alone and after $restarts restarts from checkpoints ($n ranks)"
    ;;
*)
    echo "usage: $0 split|quiesce|restart MPIEXEC UPPER_DIR HPCC NRANKS" \
        "[COORD MIN_CYCLES | COORD RESTORER ENGINE RESTARTS]" >&2
    exit 2
    ;;
esac
