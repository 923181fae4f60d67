#!/usr/bin/env bash
# Installs every Debian package that building ckpt and running its tests needs.
# Idempotent: packages already present are skipped by apt.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git ca-certificates
  protobuf-compiler libprotobuf-dev
  libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev
  libhdf5-dev hdf5-tools python3-h5py
  libbpf-dev libelf-dev zlib1g-dev libxxhash-dev libzstd-dev
  openmpi-bin libopenmpi-dev libpmix-dev gfortran
  hpcc python3-mpi4py
  slurmctld slurmd slurm-client libslurm-dev munge
  procps psmisc iproute2 util-linux
  gawk
  python3
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
