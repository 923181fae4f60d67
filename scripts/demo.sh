#!/usr/bin/env bash
# The demo: install what is missing, build, bring up a private Slurm cluster on this machine
# (munged, slurmctld, three slurmd: tests/slurm/cluster.sh), then, as an unprivileged user:
# 1. examples/mpi-job, an unmodified Open MPI program, 4 ranks over 2 nodes, checkpointed
#    every 5 s; one of its nodes is killed; Slurm requeues it and ckpt restores every rank on
#    the nodes it gets, with a fresh MPI underneath: the answer of an uninterrupted run;
# 2. examples/serial-job, the same story for a serial batch job, then `ckpt-job list` and a
#    `ckpt-job restore` of the finished job.
# Everything it started is stopped at the end, even on failure.
#
#   scripts/demo.sh            (as root; CKPT_BUILD_DIR and CKPT_DEMO_DIR override the paths)
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD

bold=$(tput bold 2>/dev/null || true)
plain=$(tput sgr0 2>/dev/null || true)
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
info() { printf '    %s\n' "$*"; }
die() {
    printf '\n%sdemo failed: %s%s\n' "$bold" "$*" "$plain" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "run it as root (it starts Slurm daemons and creates test users)"

step "Installing packages (scripts/install-deps.sh)"
bash scripts/install-deps.sh

build=${CKPT_BUILD_DIR:-build}
step "Building into $build"
cmake -S . -B "$build" >/dev/null
cmake --build "$build" -j2
build=$(cd "$build" && pwd)

step "Kernel features the engine needs (ckpt-engine check)"
"$build/engine/ckpt-engine" check

demo=${CKPT_DEMO_DIR:-/tmp/ckpt-demo}
# The job's user runs sbatch (which loads the plugin), ckpt-job and the example program:
# give them copies it can read wherever the clone lives (/root is private).
mkdir -p "$demo/bin"
cp "$build/slurm-plugin/spank/spank_ckpt.so" "$build/slurm-plugin/cli/ckpt-job" \
    "$build/examples/serial-job/serial-job" examples/serial-job/serial-job.sbatch \
    "$build/examples/mpi-job/mpi-job" examples/mpi-job/mpi-job.sbatch "$demo/bin/"
chmod 755 "$demo" "$demo/bin" "$demo/bin/"*
export CKPT_SPANK_PLUGIN=$demo/bin/spank_ckpt.so
# mpi=: ckpt's libmpi (the ranks' upper half), staged by cluster.sh under $demo/lib/mpi.
export CKPT_SPANK_ARGS="dir=$demo/ckpt keep=2 engine=$build/engine/ckpt-engine agent=$build/slurm-plugin/agent/ckpt-agent mpi=$build/mpi/upper"

step "Starting a private Slurm cluster in $demo (munged, slurmctld, slurmd n1 n2 n3)"
trap 'step "Stopping the cluster"; bash "$src/tests/slurm/cluster.sh" down "$demo" || true' EXIT
bash tests/slurm/cluster.sh up "$demo"
eval "$(bash tests/slurm/cluster.sh env "$demo")"
info "plugstack.conf: $(grep -v '^#' "$demo/etc/plugstack.conf")"
sinfo

user=ckpttest
work=$demo/work/$user/demo
rm -rf "$work"
mkdir -p "$work"
chown "$user:$user" "$work"
as_user() {
    (cd "$work" && runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin \
        SLURM_CONF="$SLURM_CONF" CKPT_ROOT="$demo/ckpt" HOME="$work" "$@")
}
ckpt_job() { as_user "$demo/bin/ckpt-job" "$@"; }
state() { scontrol show job "$1" -o | tr ' ' '\n' | sed -n "s/^$2=//p"; }
wait_done() {
    local job=$1 limit=$2 last="" s start=$SECONDS
    while :; do
        s="$(state "$job" JobState) $(state "$job" NodeList)"
        [ "$s" = "$last" ] || info "$((SECONDS - start)) s: job $job ${s% } "
        last=$s
        case $s in COMPLETED* | FAILED* | CANCELLED* | TIMEOUT* | NODE_FAIL*) return ;; esac
        ((SECONDS - start < limit)) || die "job $job not done after $limit s"
        sleep 1
    done
}

wait_first_set() {
    for ((i = 0; i < 60; i++)); do
        ckpt_job list "$1" --json 2>/dev/null | grep '"current_set": [0-9]' >/dev/null && return
        sleep 1
    done
    die "job $1: no checkpoint after 60 s"
}

# Kills node $2 ($3 runs there) under job $1, waits until Slurm requeued the job and it
# completed (within $4 s), and shows what it printed ($5) around the restore.
lose_node() {
    local job=$1 node=$2 what=$3 limit=$4 out=$5
    step "Killing node $node ($what: its slurmd, step daemons and processes, SIGKILL)"
    bash tests/slurm/cluster.sh kill-node "$demo" "$node"
    info "Slurm notices the node is gone, requeues the job and starts it on the nodes left (~30 s)"
    wait_done "$job" "$limit"
    [ "$(state "$job" JobState)" = COMPLETED ] || die "job $job ended $(state "$job" JobState)"
    step "What the job printed (progress lines elided)"
    grep -v '^step' "$out" | sed 's/^/      /'
    info "first progress line after the restore (it continues, it does not start over):"
    sed -n '/restoring from/,$p' "$out" | grep '^step' | sed -n 1p | sed 's/^/      /'
}

# --- 1. an MPI job -------------------------------------------------------------------------
mpi_steps=800
mpi_env=(OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo OMPI_MCA_mpi_yield_when_idle=1)
step "The answer of an uninterrupted MPI run (mpi-job $mpi_steps steps, 4 ranks under mpirun, no ckpt)"
env "${mpi_env[@]}" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    mpirun -n 4 --oversubscribe "$demo/bin/mpi-job" "$mpi_steps" 0 "$work/mpi-expected.txt" >/dev/null
info "$(cat "$work/mpi-expected.txt")"

step "Submitting examples/mpi-job as $user: 4 ranks on 2 nodes, sbatch --checkpoint-interval=5s"
info "(several slurmd share this host: the ranks talk TCP over loopback, hence the OMPI_MCA_* settings)"
job=$(as_user env "${mpi_env[@]}" sbatch --parsable --export=ALL,MPI_JOB="$demo/bin/mpi-job" \
    --checkpoint-interval=5s "$demo/bin/mpi-job.sbatch" "$mpi_steps" 40)
job=${job%%;*}
out=$work/mpi-job-$job.out
info "job $job; its output goes to $out"

step "Waiting for its first committed checkpoint set (every rank quiesced, no message in flight)"
wait_first_set "$job"
ckpt_job show "$job" | sed -n '/^set /,$p'
info "the agents' log: $(grep -h 'quiesced' "$demo/ckpt/$job"/agents/step-0.node-0.log | tail -1 | sed 's/^ckpt slurm\[[0-9]*\] //')"
nodes=$(state "$job" NodeList)
node=$(scontrol show hostnames "$nodes" | tail -1)
info "ranks run on $nodes; last lines of the job's output:"
tail -n 2 "$out" | sed 's/^/      /'

lose_node "$job" "$node" "ranks 2 and 3" 240 "$out"
[ "$(grep -c '^start:' "$out" || true)" = 4 ] || die "the ranks started more than once"
if cmp -s "$work/mpi-expected.txt" "$work/answer-$job.txt"; then
    info "answer: $(cat "$work/answer-$job.txt")  == uninterrupted run's: the right answer"
else
    die "answer $(cat "$work/answer-$job.txt" 2>&1) differs from $(cat "$work/mpi-expected.txt")"
fi
bash tests/slurm/cluster.sh start-node "$demo" "$node"
mpi_job=$job

# --- 2. a serial job -----------------------------------------------------------------------
steps=400
step "The answer of an uninterrupted run (serial-job $steps steps, run directly)"
"$demo/bin/serial-job" "$steps" 0 "$work/expected.txt" >/dev/null
info "$(cat "$work/expected.txt")"

step "Submitting examples/serial-job as $user: sbatch --checkpoint-interval=5s (the script has --requeue)"
job=$(as_user sbatch --parsable --export=ALL,SERIAL_JOB="$demo/bin/serial-job" \
    --checkpoint-interval=5s "$demo/bin/serial-job.sbatch" "$steps" 60)
job=${job%%;*}
out=$work/serial-job-$job.out
info "job $job; its output goes to $out"

step "Waiting for its first committed checkpoint set"
wait_first_set "$job"
ckpt_job list "$job"
ckpt_job status "$job"
node=$(state "$job" NodeList)
info "last lines of the job's output:"
tail -n 2 "$out" | sed 's/^/      /'

lose_node "$job" "$node" "the job" 180 "$out"
starts=$(grep -c '^start:' "$out" || true)
[ "$starts" = 1 ] || die "the program started $starts times"
if cmp -s "$work/expected.txt" "$work/answer-$job.txt"; then
    info "answer: $(cat "$work/answer-$job.txt")  == uninterrupted run's: the right answer"
else
    die "answer $(cat "$work/answer-$job.txt") differs from $(cat "$work/expected.txt")"
fi
bash tests/slurm/cluster.sh start-node "$demo" "$node"

step "ckpt-job list (every job of $user) and the job's sets"
ckpt_job list
ckpt_job list "$job"

step "ckpt-job restore $job: the finished job submitted again from its newest set"
rm -f "$work/answer-$job.txt"  # the restored job must write it again
new=$(ckpt_job restore "$job")
info "new job $new"
wait_done "$new" 120
[ "$(state "$new" JobState)" = COMPLETED ] || die "job $new ended $(state "$new" JobState)"
sed 's/^/      /' "$work/serial-job-$new.out" | grep -v '^      step' || true
cmp -s "$work/expected.txt" "$work/answer-$job.txt" || die "the restored job's answer differs or is missing"
info "the restored job resumed from the set and wrote the same answer"

step "Done: MPI job $mpi_job and serial job $job survived the loss of a node and finished with the right answers"
