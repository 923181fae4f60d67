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

fail() {
    echo "FAIL ($TEST_NAME): $*" >&2
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
