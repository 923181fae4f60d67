# shellcheck shell=bash
# hpcc (the HPC Challenge benchmark as Debian packages it) for the tests: its input file and
# its own verification, read from its output. Used by tests/mpi/run_hpcc.sh (mpirun) and
# tests/slurm/test_mpi_hpcc.sh (a node failure under Slurm). The caller defines fail().

# hpcc_input DIR NRANKS [N]: DIR/hpccinf.txt for NRANKS ranks on a process grid P x Q as
# square as it gets; HPL's matrix N (default 400, NB=40: RandomAccess, FFT, STREAM and DGEMM
# take their sizes from it, so everything stays small), then PTRANS's (none beyond HPL's).
hpcc_input() {
    local dir=$1 n=$2 size=${3:-400} p=1 q i
    for ((i = 1; i * i <= n; i++)); do ((n % i == 0)) && p=$i; done
    q=$((n / p))
    mkdir -p "$dir"
    cat >"$dir/hpccinf.txt" <<INPUT
HPLinpack benchmark input file
Innovative Computing Laboratory, University of Tennessee
HPL.out      output file name (if any)
8            device out (6=stdout,7=stderr,file)
1            # of problems sizes (N)
$size          Ns
1            # of NBs
40           NBs
0            PMAP process mapping (0=Row-,1=Column-major)
1            # of process grids (P x Q)
$p            Ps
$q            Qs
16.0         threshold
1            # of panel fact
2            PFACTs (0=left, 1=Crout, 2=Right)
1            # of recursive stopping criterium
4            NBMINs (>= 1)
1            # of panels in recursion
2            NDIVs
1            # of recursive panel fact.
1            RFACTs (0=left, 1=Crout, 2=Right)
1            # of broadcast
1            BCASTs (0=1rg,1=1rM,2=2rg,3=2rM,4=Lng,5=LnM)
1            # of lookahead depth
1            DEPTHs (>=0)
2            SWAP (0=bin-exch,1=long,2=mix)
64           swapping threshold
0            L1 in (0=transposed,1=no-transposed) form
0            U  in (0=transposed,1=no-transposed) form
1            Equilibration (0=no,1=yes)
8            memory alignment in double (> 0)
##### This line (no. 32) is ignored (it serves as a separator). ######
0                               Number of additional problem sizes for PTRANS
1200                            values of N
0                               number of additional blocking sizes for PTRANS
40                              values of NB
INPUT
}

# The verification results of a run, one per line, without timings (each PTRANS verdict once:
# how many times it runs depends on how fast it goes).
hpcc_verdicts() {
    grep -E 'PASSED|FAILED|Found [0-9]+ errors|Solution Validates|Node\(s\) with error|^Success=|tests completed and|End of HPC Challenge tests' "$1" |
        sed -E -e 's/^(WALL|CPU) .* (PASSED|FAILED) .*/PTRANS \2/' \
            -e 's/^\|\|Ax-b\|\|.*\.\.\.\.\.\. (PASSED|FAILED)$/HPL residual \1/' -e 's/^ +//' |
        awk '!/^PTRANS / || !seen[$0]++'  # PTRANS repeats itself as long as time allows
}

# hpcc_check_passed OUT VERDICTS NAME: hpcc's own verification passed in its output file OUT
# (NAME in messages); the verdicts go to the file VERDICTS.
hpcc_check_passed() {
    local out=$1 verdicts=$2 name=$3
    [ -s "$out" ] || fail "$name: no hpccoutf.txt"
    hpcc_verdicts "$out" >"$verdicts"
    grep -q "FAILED" "$out" && fail "$name: a verification FAILED"
    grep -qx "HPL residual PASSED" "$verdicts" || fail "$name: no HPL residual PASSED line"
    grep -qx "PTRANS PASSED" "$verdicts" || fail "$name: no PTRANS PASSED line"
    grep -qx "Success=1" "$verdicts" || fail "$name: hpcc did not report Success=1"
    grep -q "Solution Validates" "$verdicts" || fail "$name: STREAM did not validate"
    grep -qE "Found [1-9][0-9]* errors|with error [1-9]|^[1-9][0-9]* tests completed and failed" "$verdicts" &&
        fail "$name: errors found by the verification"
    [ "$(grep -c "Found 0 errors" "$verdicts")" -ge 4 ] || fail "$name: RandomAccess was not verified"
    grep -qx "End of HPC Challenge tests." "$verdicts" || fail "$name: hpcc did not finish"
    # Started once: a run started over would write its header again.
    [ "$(grep -c "^Begin of MPIRandomAccess section" "$out")" = 1 ] || fail "$name: hpcc started more than once"
}
