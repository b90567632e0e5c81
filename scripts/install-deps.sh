#!/usr/bin/env bash
# Installs the Debian packages addc builds against. Idempotent: packages already present are
# not touched, and nothing is fetched when all are installed. Needs root (or sudo) for apt-get.
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config
  clang libclang-rt-14-dev              # tests: libFuzzer targets (tests/fuzz)
  libopenblas-dev                       # sgemm for matmul / conv / attention
  libyaml-dev                           # configs
  libopenmpi-dev openmpi-bin            # distributed: MPI ranks
  libhdf5-openmpi-dev                   # distributed: parallel HDF5 checkpoints
  libarchive-dev                        # data: WebDataset tar shards
  libturbojpeg0-dev libjpeg62-turbo-dev # data: JPEG decode with DCT scaling
  libpng-dev                            # data: PNG
  dataset-fashion-mnist                 # data: the toy experiment's images (addc shards fmnist)
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
