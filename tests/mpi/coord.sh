# Sourced by the MPI test scripts (run_split.sh, run_restart.sh, run_hpcc.sh), which define
# $work, $n and fail().
# start_coord NAME SECONDS COORD [ARGS...]: ckpt-mpi-coord COORD for the $n ranks of one run on
# $work/ctl/sock (a private folder: only this user's ranks reach it), in the background for at
# most SECONDS (its pid in $coord_pid), output in $work/NAME.{out,err}; returns once it listens.
start_coord() {
    local name=$1 seconds=$2 coord=$3
    shift 3
    mkdir -p -m 700 "$work/ctl"
    rm -f "$work/ctl/sock"
    timeout "$seconds" "$coord" --socket "$work/ctl/sock" --ranks "$n" "$@" \
        >"$work/$name.out" 2>"$work/$name.err" &
    coord_pid=$!
    for _ in $(seq 100); do [ -S "$work/ctl/sock" ] && return; sleep 0.05; done
    fail "the coordinator did not listen"
}
