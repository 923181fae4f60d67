#!/bin/bash
# Runs an MPI test program with Open MPI alone and through libckpt_mpi (the split rank).
#   run_split.sh compare     MPIEXEC UPPER_DIR NRANKS PROGRAM [ARGS...]
#       both runs must succeed with the same standard output; in the second, every rank must
#       report (CKPT_MPI_TRACE_INIT=1) that it runs on our upper half over the real libmpi
#   run_split.sh ckpt        ...   only through libckpt_mpi, same checks
#   run_split.sh unsupported ...   only through libckpt_mpi; must fail, naming $CKPT_EXPECT_UNSUPPORTED
#       ("ckpt: X is not supported by ckpt"), or printing $CKPT_EXPECT_REFUSAL when that is set;
#       $CKPT_EXPECT_UNTRACED=1: the refusal comes before MPI_Init's trace (Fortran)
#   run_split.sh quiesce     ...   as compare, while $CKPT_MPI_COORD (ckpt-mpi-coord) quiesces and
#       resumes the ranks of the second run back to back, at least $CKPT_MIN_CYCLES times
set -u
mode=$1 mpiexec=$2 upper=$3 n=$4
shift 4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/coord.sh"

run() {  # run <name> [env...]: mpirun the program, stdout and stderr to $work/<name>.{out,err}
    local name=$1
    shift
    timeout 50 "$mpiexec" -n "$n" --oversubscribe "$@" "${prog[@]}" >"$work/$name.out" 2>"$work/$name.err"
    echo $? >"$work/$name.rc"
}
show() {
    echo "--- $1: exit $(cat "$work/$1.rc")"
    sed 's/^/  out: /' "$work/$1.out"
    sed 's/^/  err: /' "$work/$1.err" | head -40
}
fail() {
    echo "FAIL: $*"
    for r in plain ckpt; do [ -f "$work/$r.rc" ] && show $r; done
    exit 1
}
check_traced() {  # every rank ran on our upper half, with the real libmpi as lower half
    local traced
    # Not anchored: mpirun may put another rank's unfinished line in front of one.
    traced=$(grep -oE "ckpt-mpi: rank [0-9]+ of $n: upper half $upper/[^ ]+, lower half /[^ ]+ \(namespace [1-9][0-9]*\)" \
        "$work/ckpt.err" | sort -u | wc -l)
    [ "$traced" = "$n" ] || fail "$traced of $n ranks report running through libckpt_mpi"
    if grep -E "ckpt-mpi: .*lower half $upper/" "$work/ckpt.err" >/dev/null; then
        fail "the lower half is libckpt_mpi itself"
    fi
}

prog=("$@")
ckpt_env=(-x LD_LIBRARY_PATH="$upper${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" -x CKPT_MPI_TRACE_INIT=1)
case $mode in
compare)
    run plain
    [ "$(cat "$work/plain.rc")" = 0 ] || fail "Open MPI alone failed"
    grep -q "^ckpt-mpi:" "$work/plain.err" && fail "the plain run went through libckpt_mpi"
    run ckpt "${ckpt_env[@]}"
    [ "$(cat "$work/ckpt.rc")" = 0 ] || fail "the run through libckpt_mpi failed"
    check_traced
    [ -s "$work/plain.out" ] || fail "no output"
    cmp -s "$work/plain.out" "$work/ckpt.out" || fail "outputs differ"
    cat "$work/ckpt.out"
    echo "same output with Open MPI alone and through libckpt_mpi ($n ranks)"
    ;;
ckpt)
    run ckpt "${ckpt_env[@]}"
    [ "$(cat "$work/ckpt.rc")" = 0 ] || fail "the run through libckpt_mpi failed"
    check_traced
    cat "$work/ckpt.out"
    echo "ran through libckpt_mpi ($n ranks)"
    ;;
unsupported)
    run ckpt "${ckpt_env[@]}"
    [ "$(cat "$work/ckpt.rc")" != 0 ] || fail "an unsupported call did not fail the run"
    [ "${CKPT_EXPECT_UNTRACED:-0}" = 1 ] || check_traced
    line=${CKPT_EXPECT_REFUSAL:-"ckpt: $CKPT_EXPECT_UNSUPPORTED is not supported by ckpt"}
    grep -qF "$line" "$work/ckpt.err" || fail "no '$line' line"
    grep -q "returned" "$work/ckpt.out" && fail "the unsupported call returned"
    echo "$CKPT_EXPECT_UNSUPPORTED refused clearly, exit $(cat "$work/ckpt.rc")"
    ;;
quiesce)
    run plain
    [ "$(cat "$work/plain.rc")" = 0 ] || fail "Open MPI alone failed"
    start_coord coord 55 "$CKPT_MPI_COORD" --min-cycles "$CKPT_MIN_CYCLES" --timeout-ms 20000
    run ckpt "${ckpt_env[@]}" -x CKPT_MPI_CONTROL="$work/ctl/sock"
    wait $coord_pid
    coord_rc=$?
    sed 's/^/  coordinator: /' "$work/coord.out" "$work/coord.err"
    [ "$(cat "$work/ckpt.rc")" = 0 ] || fail "the run through libckpt_mpi failed"
    check_traced
    [ "$coord_rc" = 0 ] || fail "the coordinator failed (exit $coord_rc)"
    [ -s "$work/plain.out" ] || fail "no output"
    cmp -s "$work/plain.out" "$work/ckpt.out" || fail "outputs differ"
    cat "$work/ckpt.out"
    echo "same output with Open MPI alone and while quiesced $(grep -oE '^quiesce: [0-9]+ cycles' "$work/coord.out" | grep -oE '[0-9]+') times ($n ranks)"
    ;;
*)
    echo "usage: $0 compare|ckpt|unsupported|quiesce MPIEXEC UPPER_DIR NRANKS PROGRAM [ARGS...]" >&2
    exit 2
    ;;
esac
