#!/bin/bash
# check_abi.sh NM REAL_LIBMPI OUR_LIBMPI: libckpt_mpi stands in for the real library: same
# soname, every MPI_*/PMPI_*/OMPI_C_* function, and every predefined object mpi.h names
# (ompi_mpi_*, ompi_request_null, ompi_message_*, MPI_F_STATUS*_IGNORE) with the same size.
set -u
nm=$1 real=$2 ours=$3
fail() { echo "FAIL: $*"; exit 1; }
soname() { readelf -d "$1" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p'; }
[ "$(soname "$real")" = "$(soname "$ours")" ] || fail "soname $(soname "$ours") instead of $(soname "$real")"
funcs() { "$nm" -D --defined-only "$1" | awk '$2 ~ /^[TWi]$/ && $3 ~ /^(P?MPI_|OMPI_C_MPI_)/ {print $3}' | sort; }
missing=$(comm -23 <(funcs "$real") <(funcs "$ours"))
[ -z "$missing" ] || fail "functions missing: $(echo $missing | head -c 400)"
objects() { "$nm" -D -S --defined-only "$1" | awk '$3 ~ /^[BDV]$/ && $4 ~ /^(ompi_mpi_|ompi_request_null$|ompi_message_|MPI_F_STATUS)/ && $4 !~ /_addr$|_f_to_c_table$/ {print $4, $2}' | sort; }
wrong=$(join -a1 -e none -o 0,1.2,2.2 <(objects "$ours") <(objects "$real") | awk '$2 != $3')
[ -z "$wrong" ] || fail "objects whose size differs from the real library's (name ours real): $wrong"
n=$(objects "$ours" | wc -l)
[ "$n" -ge 90 ] || fail "only $n predefined objects"
echo "abi ok: $(funcs "$ours" | wc -l) functions, $n predefined objects sized as in $(soname "$real")"
