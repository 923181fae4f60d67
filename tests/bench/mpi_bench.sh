#!/bin/bash
# MPI benchmark of libckpt_mpi (docs/mpi.md): prints one table.
#   mpi_bench.sh MPIEXEC UPPER_DIR COORD STRESS PINGPONG MEMORY ENGINE [--quick]
# - quiesce latency: ckpt-mpi-coord quiesces and resumes the ranks of mpi_stress (a tight
#   communication loop) back to back; trigger to every rank parked, median and p90, for 4
#   and 8 ranks;
# - wrapper cost: mpi_pingpong alone and through libckpt_mpi in the same run, interleaved,
#   best of 5: calls to MPI_PROC_NULL (the wrapper alone), the 8-byte ping-pong, a stream of
#   64 KiB messages and an 8-byte allreduce;
# - checkpoint: ranks of mpi_memory (256 MiB of touched memory each) quiesced and dumped
#   without their lower halves, 1 rank and 4 ranks on this node: the 4 are dumped in
#   parallel, so their time over the single rank's is what parallelism gives (4 if none).
# Runs on loopback TCP (the local cluster's transport) with more ranks than cores, so
# absolute times are this shared machine's; the ratios are what to compare.
set -u
mpiexec=$1 upper=$2 coord=$3 stress=$4 pingpong=$5 memory=$6 engine=$7
quick=${8:-}
export OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
export OMPI_MCA_mpi_yield_when_idle=1
[ "$(id -u)" = 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -m 700 "$work/ctl"
cycles=200 iters=3000 reps=5 pp=100000 mib=256
[ "$quick" = --quick ] && { cycles=20 iters=300 reps=1 pp=2000 mib=16; }

printf '%-44s %12s %12s %8s\n' "case" "ckpt" "alone" "ratio"
for n in 4 8; do
    rm -f "$work/ctl/sock"
    "$coord" --socket "$work/ctl/sock" --ranks "$n" --cycles "$cycles" --timeout-ms 60000 >"$work/q.out" 2>"$work/q.err" &
    c=$!
    for _ in $(seq 100); do [ -S "$work/ctl/sock" ] && break; sleep 0.05; done
    "$mpiexec" -n "$n" --oversubscribe -x LD_LIBRARY_PATH="$upper" -x CKPT_MPI_CONTROL="$work/ctl/sock" \
        "$stress" "$iters" >/dev/null 2>&1
    wait $c
    line=$(grep '^quiesce:' "$work/q.out")
    med=$(echo "$line" | sed -E 's/.*median ([0-9.]+) ms.*/\1/')
    p90=$(echo "$line" | sed -E 's/.*p90 ([0-9.]+) ms.*/\1/')
    done_cycles=$(echo "$line" | sed -E 's/^quiesce: ([0-9]+) cycles.*/\1/')
    printf '%-44s %9s ms %12s %8s\n' "quiesce, $n ranks, median of $done_cycles" "$med" "-" "-"
    printf '%-44s %9s ms %12s %8s\n' "quiesce, $n ranks, p90" "$p90" "-" "-"
done

best() {  # best <field regex> <file>...: smallest value over the runs
    grep -hoE "$1" "${@:2}" | grep -oE '[0-9.]+' | sort -g | head -1
}
for r in $(seq "$reps"); do
    "$mpiexec" -n 2 "$pingpong" "$pp" >"$work/alone.$r" 2>/dev/null
    "$mpiexec" -n 2 -x LD_LIBRARY_PATH="$upper" "$pingpong" "$pp" >"$work/ckpt.$r" 2>/dev/null
done
row() {  # row <label> <regex>
    local a k
    a=$(best "$2" "$work"/alone.*)
    k=$(best "$2" "$work"/ckpt.*)
    printf '%-44s %12s %12s %8s\n' "$1" "$k" "$a" "$(awk -v k="$k" -v a="$a" 'BEGIN { if (a > 0) printf "%.2f", k / a; else print "-" }')"
}
row "MPI_Send to MPI_PROC_NULL (ns)" '[0-9.]+ ns MPI_Send'
row "MPI_Isend+MPI_Wait to MPI_PROC_NULL (ns)" '[0-9.]+ ns MPI_Isend'
row "8-byte ping-pong, Send/Recv (us one way)" '[0-9.]+ us one way'
row "8-byte ping-pong, Isend/Irecv/Wait (us)" '[0-9.]+ us \(Isend'
row "64 KiB stream (MB/s)" '[0-9.]+ MB/s'
row "8-byte allreduce (us)" 'bytes: [0-9.]+ us$'

# Checkpoint time: trigger to every rank's images written (quiesce, then the parallel dumps).
dump_ms() {  # dump_ms <ranks>: ms to dump <ranks> ranks of mpi_memory
    local n=$1
    rm -rf "$work/sets" "$work/ctl/sock"
    mkdir -m 700 "$work/sets"
    "$coord" --socket "$work/ctl/sock" --ranks "$n" --cycles 1 --interval-ms 1500 --timeout-ms 60000 \
        --dump "$work/sets" --engine "$engine" --kill-after-dump >"$work/d.out" 2>"$work/d.err" &
    local c=$!
    for _ in $(seq 100); do [ -S "$work/ctl/sock" ] && break; sleep 0.05; done
    "$mpiexec" -n "$n" --oversubscribe -x LD_LIBRARY_PATH="$upper" -x CKPT_MPI_CONTROL="$work/ctl/sock" \
        "$memory" "$mib" >/dev/null 2>&1
    wait $c
    sed -nE 's/^dumped .* in ([0-9.]+) ms$/\1/p' "$work/d.out"
}
one=$(dump_ms 1)
four=$(dump_ms 4)
printf '%-44s %9s ms %12s %8s\n' "checkpoint, 1 rank x $mib MiB" "${one:-failed}" "-" "-"
printf '%-44s %9s ms %12s %8s\n' "checkpoint, 4 ranks x $mib MiB (vs 1 rank)" "${four:-failed}" "${one:-failed}" \
    "$(awk -v k="$four" -v a="$one" 'BEGIN { if (a > 0 && k > 0) printf "%.2f", k / a; else print "-" }')"
