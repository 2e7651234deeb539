#!/usr/bin/env bash
# System programs and libraries from Debian that the video, server and
# distributed paths need, installed only when missing (CI and a new machine
# start without them). Called by scripts/setup.sh and scripts/test.sh.
#   ffmpeg, ffprobe         adain video (frames piped through child processes)
#   mkvmerge (mkvtoolnix)   adain video: variable-frame-rate timestamps put back
#   libopencv-dev, clang    the `opencv` crate (optical flow for --temporal flow)
#   chromium(-driver)       the real-browser test of adain serve's page
#   openmpi-bin, libopenmpi-dev   adain-train --features mpi under mpirun (the mpi
#                           crate's build finds Open MPI through mpicc and libclang)
set -euo pipefail
need=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v mkvmerge >/dev/null 2>&1 || need+=(mkvtoolnix)
[ -e /usr/include/opencv4/opencv2/core.hpp ] || need+=(libopencv-dev)
ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || need+=(libclang-dev clang)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
command -v mpicc >/dev/null 2>&1 || need+=(libopenmpi-dev)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing missing system packages: ${need[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
