#!/usr/bin/env bash
# A private Slurm cluster on this machine: one munged (fresh key, own socket), one slurmctld
# and N slurmd nodes (multiple-slurmd on 127.0.0.1, one port each), all under DIR.
#
#   cluster.sh up DIR                 start (or keep, if healthy) the cluster; wait until idle
#   cluster.sh env DIR                print the exports a client needs (eval "$(cluster.sh env DIR)")
#   cluster.sh kill-node DIR NODE     SIGKILL the node's slurmd, step daemons and tasks
#   cluster.sh start-node DIR NODE    start a killed node's slurmd again; wait until it is idle
#   cluster.sh down DIR               stop everything `up` started; leave nothing running
#   cluster.sh status DIR             print the nodes' states
#   cluster.sh stage DIR FILE...      copy programs the test users run into DIR/bin; print
#                                     the copies' paths
#
# Settings for `up` (remembered in DIR/etc/cluster.env for later commands):
#   CKPT_SPANK_PLUGIN   spank_ckpt.so to load (plugstack.conf stays empty without it)
#   CKPT_SPANK_ARGS     its arguments (default: dir=DIR/ckpt)
#   CKPT_SLURM_NODES    number of nodes (default 3), named n1..nN
#   CKPT_SLURM_PORT     first TCP port (default: derived from DIR, so clusters in two build
#                       directories do not collide); slurmctld uses it, node i uses PORT+i
#
# Nothing outside DIR is written except the unprivileged test users (ckpttest, ckpttest2),
# whose work directories are DIR/work/<user>. Run as root (the daemons need it). DIR and its
# parents must be searchable by everyone (the test users read its etc/ and run its bin/): the
# build folder may be private (a clone in a 0700 folder), so the suite puts DIR under /tmp.
set -euo pipefail

readonly TEST_USERS=(ckpttest ckpttest2)

die() { echo "cluster.sh: $*" >&2; exit 1; }
say() { [ -n "${CKPT_CLUSTER_QUIET:-}" ] || echo "cluster.sh: $*" >&2; }

usage() {
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# --- paths --------------------------------------------------------------------------------

set_paths() {
    [ -n "${1:-}" ] || usage
    mkdir -p "$1"
    DIR=$(realpath "$1")
    ETC=$DIR/etc RUN=$DIR/run LOG=$DIR/log SPOOL=$DIR/spool MUNGE=$DIR/munge WORK=$DIR/work
    CONF=$ETC/slurm.conf
    MUNGE_SOCKET=$MUNGE/munge.socket.2
    # Unix socket paths hold 107 bytes; step daemons' sockets are DIR/spool/NODE/NODE_JOB.STEP.
    [ ${#DIR} -le 60 ] || die "DIR '$DIR' is too long for unix socket paths (60 characters at most)"
    export SLURM_CONF=$CONF
    # Later commands use what `up` chose; `up` itself takes the caller's settings.
    if [ "$2" != up ] && [ -f "$ETC/cluster.env" ]; then
        # shellcheck disable=SC1091
        . "$ETC/cluster.env"
    fi
}

node_names() {
    local n=${NODE_COUNT:-${CKPT_SLURM_NODES:-3}} i
    for ((i = 1; i <= n; i++)); do echo "n$i"; done
}

# --- processes ----------------------------------------------------------------------------

# The pid in a pid file, if that process is alive and its command line names DIR (a stale
# file must never make us kill an unrelated process that reused the pid).
pid_from_file() {
    local file=$1 pid
    [ -f "$file" ] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -F "$DIR/" >/dev/null || return 1
    echo "$pid"
}

# Step daemons rewrite their argv and environ; they are found by their listening sockets in
# the node's spool directory (NODE, or every node when empty).
stepd_pids() {
    local under=$SPOOL/${1:-}
    ss -xlpn 2>/dev/null | awk -v dir="$under" 'index($5, dir) == 1 { print }' |
        grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
}

# Every descendant of the given pids (not the pids themselves).
descendants() {
    [ $# -gt 0 ] || return 0
    ps -e -o pid=,ppid= | awk -v roots="$*" '
        BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) want[r[i]] = 1 }
        { parent[$1] = $2 }
        END {
            changed = 1
            while (changed) {
                changed = 0
                for (p in parent) if (!(p in want) && (parent[p] in want)) { want[p] = 1; out[p] = 1; changed = 1 }
            }
            for (p in out) print p
        }'
}

# Job processes that lost their step daemon (reparented to PID 1): their environment names
# this cluster's slurm.conf (sbatch and srun pass the submitter's SLURM_CONF on).
orphaned_job_pids() {
    local node=${1:-} env pid
    for env in /proc/[0-9]*/environ; do
        pid=${env#/proc/}; pid=${pid%/environ}
        [ "$pid" != $$ ] || continue
        [ "$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null)" = 1 ] || continue
        tr '\0' '\n' 2>/dev/null <"$env" | grep -xF "SLURM_CONF=$CONF" >/dev/null || continue
        if [ -n "$node" ]; then
            tr '\0' '\n' 2>/dev/null <"$env" | grep -xF "SLURMD_NODENAME=$node" >/dev/null || continue
        fi
        echo "$pid"
    done
}

# Every process of a job of this cluster (batch scripts, tasks, their children), whatever its
# parent: its environment names this cluster's slurm.conf and a job id. A task whose step
# daemon was not found (still starting, or its socket not listed) is one of them. Never this
# script nor its callers.
job_pids() {
    local env pid self=" "
    pid=$BASHPID
    while [ "$pid" -gt 1 ] 2>/dev/null; do
        self+="$pid "
        pid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null) || break
    done
    for env in /proc/[0-9]*/environ; do
        pid=${env#/proc/}; pid=${pid%/environ}
        [[ "$self" != *" $pid "* ]] || continue
        tr '\0' '\n' 2>/dev/null <"$env" | grep -xF "SLURM_CONF=$CONF" >/dev/null || continue
        tr '\0' '\n' 2>/dev/null <"$env" | grep "^SLURM_JOB_ID=" >/dev/null || continue
        echo "$pid"
    done
}

# Any process whose command line names DIR (daemons, batch scripts in the spool, programs
# in the work directories), except this script and its callers.
processes_naming_dir() {
    local self=() pid=$BASHPID
    while [ "$pid" -gt 1 ] 2>/dev/null; do
        self+=("-e" "$pid")
        pid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null) || break
    done
    pgrep -f -- "$DIR/" | grep -vxF "${self[@]}" || true
}

# Freezes, then SIGKILLs the given pids and whatever they forked meanwhile.
kill_tree() {
    local pids=("$@") all
    [ ${#pids[@]} -gt 0 ] || return 0
    kill -STOP "${pids[@]}" 2>/dev/null || true
    mapfile -t all < <({ printf '%s\n' "${pids[@]}"; descendants "${pids[@]}"; } | sort -u)
    kill -STOP "${all[@]}" 2>/dev/null || true
    mapfile -t all < <({ printf '%s\n' "${all[@]}"; descendants "${all[@]}"; } | sort -u)
    kill -KILL "${all[@]}" 2>/dev/null || true
    # SIGKILL only starts the exit; the caller waits for these with wait_gone.
    KILLED+=("${all[@]}")
}

# Sends SIGTERM, waits up to $2 seconds, then SIGKILLs.
stop_pid() {
    local pid=$1 wait_s=${2:-5} i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < wait_s * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# A process that exists and is not a zombie.
alive() {
    [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

wait_gone() {
    local pid i
    for pid in "$@"; do
        for ((i = 0; i < 100; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
    done
}

# --- set up -------------------------------------------------------------------------------

ensure_users() {
    local u
    # useradd takes its own locks, but two clusters starting at once must not race on the
    # "does it exist" check.
    exec 9>/tmp/.ckpt-cluster-users.lock
    flock 9
    for u in "${TEST_USERS[@]}"; do
        id "$u" >/dev/null 2>&1 && continue
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /bin/bash "$u" || id "$u" >/dev/null 2>&1 || die "useradd $u failed"
    done
    flock -u 9
    exec 9>&-
}

port_free() {
    ! ss -Htln "sport = :$1" 2>/dev/null | grep . >/dev/null
}

choose_ports() {
    local base n count
    count=$(node_names | wc -l)
    if [ -n "${CKPT_SLURM_PORT:-}" ]; then
        base=$CKPT_SLURM_PORT
    else
        base=$((20000 + ($(printf '%s' "$DIR" | cksum | cut -d' ' -f1) % 2000) * 10))
    fi
    # Skip past ports taken by something else (another cluster, a lingering socket).
    for ((n = 0; n < 50; n++)); do
        local ok=1 i
        for ((i = 0; i <= count; i++)); do port_free $((base + i)) || { ok=0; break; }; done
        [ $ok = 1 ] && break
        base=$((base + 10))
    done
    PORT_BASE=$base
}

plugstack() {
    echo "# Generated by tests/slurm/cluster.sh (see examples/plugstack.conf for the arguments)."
    if [ -n "${CKPT_SPANK_PLUGIN:-}" ]; then
        echo "required $CKPT_SPANK_PLUGIN ${CKPT_SPANK_ARGS:-dir=$DIR/ckpt}"
    fi
}

write_config() {
    local host node i=0
    host=$(hostname -s)
    mkdir -p "$ETC"
    {
        echo "# Generated by tests/slurm/cluster.sh; settings explained in docs of that script."
        echo "ClusterName=ckpt"
        echo "SlurmctldHost=$host(127.0.0.1)"
        echo "SlurmctldPort=$PORT_BASE"
        echo "SlurmUser=root"
        echo "SlurmdUser=root"
        echo "AuthType=auth/munge"
        echo "CredType=cred/munge"
        # cred_expire delays a requeued job's next start by cred_expire + 1 s (default 120).
        echo "AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10"
        echo "StateSaveLocation=$SPOOL/ctld"
        echo "SlurmdSpoolDir=$SPOOL/%n"
        echo "TmpFS=$SPOOL/%n/tmp"
        echo "SlurmctldPidFile=$RUN/slurmctld.pid"
        echo "SlurmdPidFile=$RUN/slurmd.%n.pid"
        echo "SlurmctldLogFile=$LOG/slurmctld.log"
        echo "SlurmdLogFile=$LOG/slurmd.%n.log"
        echo "SlurmctldDebug=info"
        echo "SlurmdDebug=info"
        echo "ProctrackType=proctrack/linuxproc"
        echo "TaskPlugin=task/affinity"
        echo "SelectType=select/cons_tres"
        echo "SelectTypeParameters=CR_Core"
        echo "MpiDefault=pmix"
        echo "SwitchType=switch/none"
        echo "AccountingStorageType=accounting_storage/none"
        echo "JobAcctGatherType=jobacct_gather/none"
        echo "JobCompType=jobcomp/none"
        echo "MailProg=/bin/true"
        echo "ReturnToService=2"
        echo "JobRequeue=1"
        echo "SlurmdTimeout=10"
        echo "MessageTimeout=5"
        echo "KillWait=5"
        echo "InactiveLimit=0"
        echo "MinJobAge=600"
        echo "SchedulerParameters=batch_sched_delay=0,sched_interval=2"
        echo "SlurmdParameters=config_overrides"
        echo "PlugStackConfig=$ETC/plugstack.conf"
        echo "NodeName=DEFAULT CPUs=2 RealMemory=1000 State=UNKNOWN"
        for node in $(node_names); do
            i=$((i + 1))
            echo "NodeName=$node NodeHostname=$host NodeAddr=127.0.0.1 Port=$((PORT_BASE + i))"
        done
        echo "PartitionName=debug Nodes=$(node_names | paste -sd,) Default=YES MaxTime=INFINITE State=UP"
    } >"$CONF.new"
    mv "$CONF.new" "$CONF"

    plugstack >"$ETC/plugstack.conf"
    {
        printf 'NODE_COUNT=%q\n' "$(node_names | wc -l)"
        printf 'PORT_BASE=%q\n' "$PORT_BASE"
        printf 'CKPT_SPANK_PLUGIN=%q\n' "${CKPT_SPANK_PLUGIN:-}"
        printf 'CKPT_SPANK_ARGS=%q\n' "${CKPT_SPANK_ARGS:-}"
    } >"$ETC/cluster.env"
    chmod 755 "$ETC"
    chmod 644 "$CONF" "$ETC/plugstack.conf" "$ETC/cluster.env"
}

start_munged() {
    mkdir -p "$MUNGE"
    chmod 755 "$MUNGE"
    # A fresh key each time: credentials of an earlier cluster are never accepted.
    head -c 1024 /dev/urandom >"$MUNGE/munge.key"
    chmod 400 "$MUNGE/munge.key"
    munged --force --socket="$MUNGE_SOCKET" --key-file="$MUNGE/munge.key" \
        --pid-file="$RUN/munged.pid" --log-file="$LOG/munged.log" \
        --seed-file="$MUNGE/munged.seed" --num-threads=4 ||
        die "munged failed to start; see $LOG/munged.log"
    local i
    for ((i = 0; i < 50; i++)); do
        [ -S "$MUNGE_SOCKET" ] && return 0
        sleep 0.1
    done
    die "munged socket $MUNGE_SOCKET did not appear; see $LOG/munged.log"
}

start_slurmd() {
    local node=$1
    mkdir -p "$SPOOL/$node/tmp"
    chmod 755 "$SPOOL/$node"
    chmod 1777 "$SPOOL/$node/tmp"
    slurmd -N "$node" -f "$CONF" || die "slurmd $node failed to start; see $LOG/slurmd.$node.log"
}

# Waits until every node (or the one given) is idle; with $3 = busy-ok, nodes running jobs
# (mix, alloc) count as ready too.
wait_idle() {
    local want=${1:-} deadline=$((SECONDS + ${2:-60})) states ready=idle
    [ "${3:-}" != busy-ok ] || ready="(idle|mix|alloc)"
    while ((SECONDS < deadline)); do
        if [ -n "$want" ]; then
            states=$(sinfo -h -N -n "$want" -o '%t' 2>/dev/null | sort -u)
        else
            states=$(sinfo -h -N -o '%t' 2>/dev/null | sort -u)
        fi
        [ -n "$states" ] && ! grep -qvxE "$ready" <<<"$states" && return 0
        sleep 0.2
    done
    sinfo -N >&2 || true
    die "nodes not idle after ${2:-60} s (states: ${states:-none}); logs in $LOG"
}

healthy() {
    [ -f "$CONF" ] || return 1
    pid_from_file "$RUN/munged.pid" >/dev/null || return 1
    pid_from_file "$RUN/slurmctld.pid" >/dev/null || return 1
    local node
    for node in $(node_names); do
        pid_from_file "$RUN/slurmd.$node.pid" >/dev/null || return 1
    done
    scontrol ping >/dev/null 2>&1
}

# The build folder may be private: sbatch (as a test user) loads the plugin and the agent
# runs the engine as the job's user, so both run from copies in DIR/bin, which everyone may
# read. A copy is replaced (never rewritten in place: running daemons map it) when the
# program changed.
stage_file() {
    local src=$1 dst
    dst=$DIR/bin/$(basename "$1")
    mkdir -p "$DIR/bin"
    chmod 755 "$DIR" "$DIR/bin"
    if [ "$(realpath "$src")" != "$dst" ] && ! cmp -s "$src" "$dst"; then
        install -m 755 "$src" "$dst.tmp.$$" && mv -f "$dst.tmp.$$" "$dst"
    fi
    echo "$dst"
}

# mpi=UPPER: ckpt's libmpi folder (upper/) and the shim beside it (lower/), staged as a whole
# under DIR/lib/mpi, where the upper half finds its shim again.
stage_mpi() {
    local upper=$1 f dst
    for f in "$upper"/* "$upper"/../lower/*; do
        [ -f "$f" ] || continue
        dst=$DIR/lib/mpi/$(basename "$(dirname "$(realpath "$f")")")
        mkdir -p "$dst" && chmod 755 "$DIR/lib" "$DIR/lib/mpi" "$dst"
        if ! cmp -s "$f" "$dst/$(basename "$f")"; then
            install -m 755 "$f" "$dst/$(basename "$f").tmp.$$" && mv -f "$dst/$(basename "$f").tmp.$$" "$dst/$(basename "$f")"
        fi
    done
    echo "$DIR/lib/mpi/upper"
}

stage_plugin_programs() {
    [ -z "${CKPT_SPANK_PLUGIN:-}" ] || CKPT_SPANK_PLUGIN=$(stage_file "$CKPT_SPANK_PLUGIN")
    local args="" a
    for a in ${CKPT_SPANK_ARGS:-}; do
        case $a in
        engine=/* | agent=/*) a="${a%%=*}=$(stage_file "${a#*=}")" ;;
        mpi=/*) a="mpi=$(stage_mpi "${a#*=}")" ;;
        esac
        args+="${args:+ }$a"
    done
    CKPT_SPANK_ARGS=$args
}

cmd_stage() {
    local f
    for f in "$@"; do stage_file "$f"; done
}

cmd_up() {
    [ "$(id -u)" = 0 ] || die "run as root (it starts slurmd and munged)"
    stage_plugin_programs
    if healthy && [ "$(plugstack)" = "$(cat "$ETC/plugstack.conf" 2>/dev/null)" ] &&
        [ "$(node_names | wc -l)" = "$(sinfo -h -N -o %N 2>/dev/null | wc -l)" ]; then
        wait_idle "" 60 busy-ok
        say "cluster in $DIR already up"
        return 0
    fi
    CKPT_CLUSTER_QUIET=1 cmd_down
    ensure_users
    mkdir -p "$RUN" "$LOG" "$SPOOL/ctld" "$WORK" "$DIR/ckpt"
    chmod 755 "$DIR" "$RUN" "$LOG" "$SPOOL" "$WORK" "$DIR/ckpt"
    local u
    for u in "${TEST_USERS[@]}"; do
        mkdir -p "$WORK/$u"
        chown "$u:$u" "$WORK/$u"
        chmod 700 "$WORK/$u"
    done
    # Fresh state: no job of an earlier cluster comes back. Job ids start again at 1, so the
    # checkpoints of an earlier cluster's job N must go too, or the new job N would resume them.
    rm -rf "${SPOOL:?}"/* "$RUN"/*.pid "${DIR:?}"/ckpt/*
    mkdir -p "$SPOOL/ctld"
    choose_ports
    write_config
    start_munged
    slurmctld -c -f "$CONF" || die "slurmctld failed to start; see $LOG/slurmctld.log"
    local node
    for node in $(node_names); do start_slurmd "$node"; done
    wait_idle "" 60
    say "cluster up in $DIR: $(node_names | paste -sd' '), slurmctld port $PORT_BASE"
}

cmd_env() {
    printf 'export SLURM_CONF=%q\n' "$CONF"
    printf 'export CKPT_CLUSTER_DIR=%q\n' "$DIR"
}

cmd_kill_node() {
    local node=${1:-}
    [ -n "$node" ] || usage
    node_names | grep -x "$node" >/dev/null || die "no node $node in $DIR"
    local pids=()
    KILLED=()
    mapfile -t pids < <({
        pid_from_file "$RUN/slurmd.$node.pid" || true
        stepd_pids "$node/"
        orphaned_job_pids "$node"
    } | sort -u)
    kill_tree "${pids[@]}"
    wait_gone "${KILLED[@]}"
    say "killed node $node (${#pids[@]} processes and their children)"
}

cmd_start_node() {
    local node=${1:-}
    [ -n "$node" ] || usage
    node_names | grep -x "$node" >/dev/null || die "no node $node in $DIR"
    if ! pid_from_file "$RUN/slurmd.$node.pid" >/dev/null; then
        start_slurmd "$node"
    fi
    wait_idle "$node" 60
}

cmd_down() {
    local pids=() pid node
    KILLED=()
    # 1. Step daemons and their tasks, frozen and killed together, then job processes that
    #    already lost their step daemon.
    mapfile -t pids < <(stepd_pids "")
    kill_tree "${pids[@]}"
    mapfile -t pids < <({ orphaned_job_pids ""; job_pids; } | sort -u)
    kill_tree "${pids[@]}"
    # 2. The daemons, politely first.
    for node in $(node_names); do
        pid=$(pid_from_file "$RUN/slurmd.$node.pid") && stop_pid "$pid" 5
    done
    pid=$(pid_from_file "$RUN/slurmctld.pid") && stop_pid "$pid" 5
    pid=$(pid_from_file "$RUN/munged.pid") && stop_pid "$pid" 5
    # 3. Anything else that names DIR (a daemon whose pid file was lost, a job's program),
    #    and step daemons that appeared meanwhile.
    mapfile -t pids < <({ processes_naming_dir; stepd_pids ""; orphaned_job_pids ""; job_pids; } | sort -u)
    kill_tree "${pids[@]}"
    wait_gone "${KILLED[@]}"
    rm -f "$RUN"/*.pid "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    mapfile -t pids < <({ processes_naming_dir; stepd_pids ""; orphaned_job_pids ""; job_pids;
        for pid in "${KILLED[@]}"; do alive "$pid" && echo "$pid"; done; } | sort -u)
    if [ ${#pids[@]} -gt 0 ]; then
        ps -o pid,ppid,user,args -p "$(IFS=,; echo "${pids[*]}")" >&2 || true
        die "processes of $DIR still running: ${pids[*]}"
    fi
    say "cluster in $DIR down"
}

cmd_status() {
    sinfo -N -o '%N %t %E' || true
}

main() {
    local cmd=${1:-}
    [ -n "$cmd" ] || usage
    shift
    set_paths "${1:-}" "$cmd"
    shift
    case $cmd in
    up) cmd_up ;;
    stage) cmd_stage "$@" ;;
    env) cmd_env ;;
    kill-node) cmd_kill_node "$@" ;;
    start-node) cmd_start_node "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) usage ;;
    esac
}

main "$@"
