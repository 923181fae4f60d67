# shellcheck shell=bash
# Helpers for the slurm suite's test scripts: `. lib.sh DIR` with DIR the cluster's directory
# (brought up by cluster.sh up, the suite's fixture).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER=${1:?usage: $0 CLUSTER_DIR}
eval "$(bash "$HERE/cluster.sh" env "$CLUSTER")"
TEST_USER=ckpttest
USER_WORK=$CKPT_CLUSTER_DIR/work/$TEST_USER
TEST_NAME=$(basename "$0" .sh)

# A failed test cancels the test users' jobs it leaves: the tests share the cluster one after
# the other, and a job left running (or pending) would hold nodes the next test needs.
fail() {
    echo "FAIL ($TEST_NAME): $*" >&2
    if [ -n "${SLURM_CONF:-}" ]; then
        scancel -u ckpttest 2>/dev/null || true
        scancel -u ckpttest2 2>/dev/null || true
    fi
    exit 1
}

note() { echo "$TEST_NAME: $*"; }

# Half a second between polls. A poll's sleep killed from outside (pid_max is 32768 here and
# other suites signal pids they own, which may since have been reused) must not end the test.
pause() {
    sleep 0.5 || note "a poll's sleep ended with status $? (signalled from outside)"
}

# True while the process runs (a zombie has finished).
running() {
    [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# A private scratch directory of the test user for this test.
user_scratch() {
    local d=$USER_WORK/$TEST_NAME
    rm -rf "$d"
    mkdir -p "$d"
    chown "$TEST_USER:$TEST_USER" "$d"
    echo "$d"
}

# Runs a command as the unprivileged test user in directory $1, with the cluster's client
# environment and nothing of root's.
as_user_in() {
    local dir=$1
    shift
    (cd "$dir" && runuser -u "$TEST_USER" -- env -i PATH=/usr/local/bin:/usr/bin:/bin \
        SLURM_CONF="$SLURM_CONF" HOME="$dir" USER="$TEST_USER" LOGNAME="$TEST_USER" "$@")
}

# sbatch as the test user; prints the job id.
submit() {
    local dir=$1 out
    shift
    out=$(as_user_in "$dir" sbatch --parsable "$@") || fail "sbatch $* failed: $out"
    echo "${out%%;*}"
}

job_field() {
    scontrol show job "$1" -o 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# Waits until every given job ended; fails after $JOB_TIMEOUT seconds (default 60).
wait_jobs_done() {
    local deadline=$((SECONDS + ${JOB_TIMEOUT:-60})) job state
    for job in "$@"; do
        while :; do
            state=$(job_field "$job" JobState)
            case $state in
            COMPLETED | FAILED | CANCELLED | TIMEOUT | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE) break ;;
            esac
            ((SECONDS < deadline)) || fail "job $job not done after ${JOB_TIMEOUT:-60} s (state ${state:-unknown})"
            pause
        done
    done
}

# Waits until `grep -E PATTERN FILE` matches; fails after $2 seconds.
wait_for_line() {
    local file=$1 pattern=$2 timeout=$3 deadline=$((SECONDS + $3))
    until grep -qE "$pattern" "$file" 2>/dev/null; do
        ((SECONDS < deadline)) || fail "no line /$pattern/ in $file after $timeout s; it has: $(cat "$file" 2>/dev/null)"
        pause
    done
}

# --- checkpoint tests: `. lib.sh DIR SERIAL_JOB CKPT_JOB CKPT_ENGINE IMAGE_CLAIM` ---------

SERIAL_JOB=${2:-}
CKPT_JOB=${3:-}
CKPT_ENGINE=${4:-}
IMAGE_CLAIM=${5:-}
CKPT_ROOT=$CKPT_CLUSTER_DIR/ckpt

# A copy, in the cluster's bin/, of a program the test users run (or the engine the agent
# runs as the job's user): the build folder may be private.
stage() {
    bash "$HERE/cluster.sh" stage "$CLUSTER" "$@"
}
if [ -n "$SERIAL_JOB" ]; then
    # The batch scripts beside it are read by sbatch as the test user.
    for f in "$(dirname "$SERIAL_JOB")"/*.sbatch; do
        [ ! -f "$f" ] || stage "$f" >/dev/null
    done
    SERIAL_JOB=$(stage "$SERIAL_JOB")
fi
[ -z "$CKPT_JOB" ] || CKPT_JOB=$(stage "$CKPT_JOB")
[ -z "$CKPT_ENGINE" ] || CKPT_ENGINE=$(stage "$CKPT_ENGINE")

# ckpt-job as the test user (or as $AS_USER) in directory $1.
ckpt_job_in() {
    local dir=$1
    shift
    (cd "$dir" && runuser -u "${AS_USER:-$TEST_USER}" -- env -i PATH=/usr/local/bin:/usr/bin:/bin \
        SLURM_CONF="$SLURM_CONF" CKPT_ROOT="$CKPT_ROOT" HOME="$dir" "$CKPT_JOB" "$@")
}

# A client configuration (slurm.conf and plugstack.conf in DIR/etc) whose plugin line has the
# extra arguments given, e.g. user_dir=no: what sbatch and ckpt-job see on a site with those
# settings (the nodes keep theirs). Prints the slurm.conf path.
client_conf_with() {
    local dir=$1/etc
    shift
    mkdir -p "$dir"
    sed "s|^PlugStackConfig=.*|PlugStackConfig=$dir/plugstack.conf|" "$SLURM_CONF" >"$dir/slurm.conf"
    sed "/^required /s|\$| $*|" "$(dirname "$SLURM_CONF")/plugstack.conf" >"$dir/plugstack.conf"
    chmod 755 "$dir"
    chmod 644 "$dir/slurm.conf" "$dir/plugstack.conf"
    echo "$dir/slurm.conf"
}

# Prints the seq of the job's newest committed set ("" if none), as root.
current_set() {
    { "$CKPT_JOB" list "$1" --root "$CKPT_ROOT" --json 2>/dev/null || true; } |
        sed -n 's/.*"current_set": \([0-9]*\).*/\1/p'
}

# Waits until the job has a committed set newer than $2 (default 0); prints its seq.
wait_for_set() {
    local job=$1 after=${2:-0} timeout=${3:-60} deadline cur
    deadline=$((SECONDS + timeout))
    while :; do
        cur=$(current_set "$job")
        if [ -n "$cur" ] && [ "$cur" -gt "$after" ]; then
            echo "$cur"
            return 0
        fi
        ((SECONDS < deadline)) || fail "job $job: no committed set after $after within $timeout s; agent log: $(cat "$CKPT_ROOT/$job"/agents/*.log 2>/dev/null | tail -5)"
        pause
    done
}

# Which libmpi each running process of the test user whose command line starts with PATTERN
# (a regex) mapped, one line per process that mapped one: "ckpt" (ckpt's upper half, staged
# by the cluster) or "open-mpi".
libmpi_of_ranks() {
    local pid
    for pid in $(pgrep -u "$TEST_USER" -f "^$1" || true); do
        if grep -q "$CKPT_CLUSTER_DIR/lib/mpi/upper/" "/proc/$pid/maps" 2>/dev/null; then echo ckpt
        elif grep -q "/libmpi.so" "/proc/$pid/maps" 2>/dev/null; then echo open-mpi; fi
    done
}

# Fails if any ckpt-agent (or relay) or ckpt-engine of the job is still running (checked for a few
# seconds: slurmstepd stops agents as the step ends).
no_agent_left() {
    local job=$1 i left
    for ((i = 0; i < 20; i++)); do
        # Named by the root too: clusters of other build directories run jobs of the same ids.
        left=$(pgrep -af -- "ckpt-agent run --job $job .*--root $CKPT_ROOT |ckpt-agent relay .*--root $CKPT_ROOT --job $job |ckpt-engine .*$CKPT_ROOT/$job/" || true)
        [ -n "$left" ] || return 0
        sleep 0.5
    done
    fail "job $job left processes behind: $left"
}

# The node a job runs on (from its output's first line "... on NODE, ...").
job_node() {
    squeue -h -j "$1" -o %N 2>/dev/null
}

# Checks a serial-job output that was checkpointed and restored: one start, a restore line,
# progress after the restore continuing (not from step 10), and the expected answer.
check_resumed_output() {
    local out=$1 answer=$2 expected=$3 starts first_after
    starts=$(grep -c '^start:' "$out" || true)
    [ "$starts" = 1 ] || fail "$out: the program started $starts times (it must resume, not start over): $(cat "$out")"
    grep -q 'restoring from' "$out" || fail "$out: no restore line: $(cat "$out")"
    first_after=$(sed -n '/restoring from/,$p' "$out" | sed -n 's/^step \([0-9]*\) of.*/\1/p' | sed -n 1p)
    [ -n "$first_after" ] && [ "$first_after" -gt 10 ] ||
        fail "$out: progress after the restore starts at step '${first_after}': $(cat "$out")"
    cmp -s "$expected" "$answer" || fail "answers differ: $(cat "$answer" 2>&1) vs $(cat "$expected")"
    note "resumed at step $first_after; answer $(cat "$answer")"
}

# Kills NODE under the running JOB and waits until Slurm requeued it and it completed (one
# restart) within SECONDS (default 150); OUT is its output, shown on failure. The node is
# started again when the test exits (and the nodes' plugin line is restored, with_local_dir,
# with_plugin_args); restore_node does both earlier.
kill_node_until_done() {
    local job=$1 node=$2 out=$3 seconds=${4:-150}
    KILLED_NODE=$node
    trap restore_plugstack EXIT
    bash "$HERE/cluster.sh" kill-node "$CKPT_CLUSTER_DIR" "$node"
    JOB_TIMEOUT=$seconds wait_jobs_done "$job"
    [ "$(job_field "$job" JobState)" = COMPLETED ] || fail "job $job: $(job_field "$job" JobState): $(cat "$out")"
    [ "$(job_field "$job" Restarts)" = 1 ] || fail "job $job: Restarts=$(job_field "$job" Restarts)"
}

restore_node() {
    trap - EXIT
    bash "$HERE/cluster.sh" start-node "$CKPT_CLUSTER_DIR" "$KILLED_NODE"
    restore_plugstack
}

# --- two-level storage (local_dir=) ------------------------------------------------------

# Gives the nodes' plugin line local_dir= and drain_hold= (slurmstepd reads plugstack.conf at each
# step's start; clients see them too) and a node-local folder per node,
# $CKPT_CLUSTER_DIR/local/<node> (root's, 0755, as an admin would make it). The cluster's
# line comes back when the test exits (restore_plugstack).
LOCAL_ROOT=$CKPT_CLUSTER_DIR/local
# While this file exists, every drain waits (drain_hold=, test-only): hold_drains, release_drains.
DRAIN_HOLD=$CKPT_CLUSTER_DIR/local/drain-hold
hold_drains() { touch "$DRAIN_HOLD"; }
release_drains() { rm -f "$DRAIN_HOLD"; }
with_local_dir() {  # [MORE PLUGIN ARGUMENTS]
    local conf
    conf=$(dirname "$SLURM_CONF")/plugstack.conf
    cp -p "$conf" "$conf.saved-$TEST_NAME"
    trap restore_plugstack EXIT
    local n
    for n in $(sinfo -h -N -o %N | sort -u); do
        mkdir -p "$LOCAL_ROOT/$n"
        chmod 755 "$LOCAL_ROOT" "$LOCAL_ROOT/$n"
    done
    sed "/^required /s|\$| local_dir=$LOCAL_ROOT/%n drain_hold=$DRAIN_HOLD${*:+ $*}|" "$conf.saved-$TEST_NAME" >"$conf.tmp"
    chmod 644 "$conf.tmp"
    mv -f "$conf.tmp" "$conf"
    release_drains
}
# Gives the nodes' plugin line the extra arguments given (e.g. full_every=3) until the test
# exits (restore_plugstack).
with_plugin_args() {
    local conf
    conf=$(dirname "$SLURM_CONF")/plugstack.conf
    cp -p "$conf" "$conf.saved-$TEST_NAME"
    trap restore_plugstack EXIT
    sed "/^required /s|\$| $*|" "$conf.saved-$TEST_NAME" >"$conf.tmp"
    chmod 644 "$conf.tmp"
    mv -f "$conf.tmp" "$conf"
}
restore_plugstack() {
    local conf
    conf=$(dirname "$SLURM_CONF")/plugstack.conf
    [ ! -f "$conf.saved-$TEST_NAME" ] || mv -f "$conf.saved-$TEST_NAME" "$conf"
    release_drains
    [ -z "${KILLED_NODE:-}" ] || bash "$HERE/cluster.sh" start-node "$CKPT_CLUSTER_DIR" "$KILLED_NODE" >/dev/null 2>&1 || true
}

# The given fields (ckpt-job list --json names) of every set of JOB, one line per set, as root:
# set_fields JOB FIELD...
set_fields() {
    { "$CKPT_JOB" list "$1" --root "$CKPT_ROOT" --json 2>/dev/null || true; } |
        python3 -c 'import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
for s in d["sets"]:
    print(*[s[k] for k in sys.argv[1:]])' "${@:2}"
}

# "STATE LEVELS" of set SEQ of JOB from its index ("" if there is no such set), as root.
set_levels() {
    set_fields "$1" seq state levels | awk -v s="$2" '$1 == s { $1 = ""; print substr($0, 2) }'
}

# Waits until set SEQ of JOB is "STATE LEVELS"; fails after TIMEOUT seconds.
wait_for_levels() {
    local job=$1 seq=$2 want=$3 timeout=$4 deadline now
    deadline=$((SECONDS + timeout))
    while :; do
        now=$(set_levels "$job" "$seq")
        [ "$now" != "$want" ] || return 0
        ((SECONDS < deadline)) || fail "job $job set $seq: '$now', not '$want' after $timeout s; agent log: $(tail -5 "$CKPT_ROOT/$job"/agents/*.log 2>/dev/null)"
        sleep 0.2
    done
}
