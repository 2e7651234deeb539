#!/usr/bin/env bash
# Prepares gpu/ (an ignored folder) for scripts/gpu-train.sh on a lent GPU
# machine, from a development machine that has no GPU and no CUDA toolkit:
#   gpu/bin.tar.xz                  adain + adain-train built with --features cuda
#   gpu/vgg19-relu4_1.safetensors   the encoder (the machine cannot see ../shared)
#   gpu/data/{content,style}        data/coco and data/wikiart packed to 128 px (scripts/pack_small_data.py)
# Then, through the device tool: run `BUDGET=555 bash scripts/gpu-train.sh` with
# carry ["gpu"] and timeout_s 600 (2026-11-29: about 60 MB in all, under the
# 64 MiB the tool takes; its report is docs/bench-cuda.md).
#
# How the build works without a toolkit: CUDA 13.0 comes from PyPI wheels (nvcc,
# nvvm, headers, cuBLAS, cuRAND, NVRTC; pinned to 13.0 because the lent H200's
# driver is CUDA 13.0 and newer nvvm writes PTX it rejects). candle links libcuda
# (the driver), which no wheel has: a stub with the driver API's names is built
# for the linker, and the machine's real libcuda.so.1 is loaded at run time.
# The first build takes about 15 min on 2 cores (candle-kernels' nvcc work);
# later ones reuse $CUDA_TARGET (default /tmp/target-cuda).
#
# usage: scripts/prepare-gpu.sh   (CUDA_COMPUTE_CAP=90 for Hopper by default)
#   FEATURES=nccl scripts/prepare-gpu.sh   data-parallel training over NCCL (adds the
#       nvidia-nccl wheel; the feature also takes in MPI: the GPU machine then needs
#       Open MPI's runtime, which it does not have today)
#   BUILD_ONLY=1                           stop after the build (no gpu/ folder)
set -euo pipefail
cd "$(dirname "$0")/.."
V=${CUDA_VENV:-/tmp/cuda-venv}
ROOT=${CUDA_ROOT_DIR:-/tmp/cuda}
export CARGO_TARGET_DIR=${CUDA_TARGET:-/tmp/target-cuda}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

if [ ! -x "$V/bin/pip" ]; then python3 -m venv "$V"; fi
"$V/bin/pip" install -q "nvidia-cuda-nvcc==13.0.88" "nvidia-nvvm==13.0.88" \
    "nvidia-cuda-crt==13.0.88" "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85" \
    "nvidia-cublas==13.0.2.14" "nvidia-curand==10.4.5.25" "nvidia-cuda-nvrtc==13.0.88"
FEATURES=${FEATURES:-cuda}
case ",$FEATURES," in *,nccl,*) "$V/bin/pip" install -q "nvidia-nccl-cu13==2.32.3" ;; esac
NV=$(echo "$V"/lib/python3*/site-packages/nvidia/cu13)

# A CUDA root: bin/ include/ nvvm/ from the wheels, lib64/ with unversioned names.
mkdir -p "$ROOT/lib64"
ln -sfn "$NV/bin" "$ROOT/bin"
ln -sfn "$NV/include" "$ROOT/include"
ln -sfn "$NV/nvvm" "$ROOT/nvvm"
for f in "$NV"/lib/*.so.* "$V"/lib/python3*/site-packages/nvidia/nccl/lib/*.so.*; do
    [ -e "$f" ] || continue
    b=$(basename "$f")
    ln -sf "$f" "$ROOT/lib64/$b"
    ln -sf "$f" "$ROOT/lib64/${b%%.so*}.so"
done

# The libcuda stub: every driver function cudarc declares, as an empty symbol.
cargo fetch --locked -q
SYS=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs | head -1)
grep -oP 'pub unsafe fn \Kcu\w+(?=\()' "$SYS" | sort -u | sed 's/.*/void &(void){}/' > "$ROOT/stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$ROOT/lib64/libcuda.so" "$ROOT/stub.c"
ln -sf libcuda.so "$ROOT/lib64/libcuda.so.1"

export PATH="$ROOT/bin:$PATH" CUDA_ROOT="$ROOT" CUDA_HOME="$ROOT" CUDA_PATH="$ROOT"
export LIBRARY_PATH="$ROOT/lib64"
cargo build --release --locked --features "$FEATURES" --bins
[ "${BUILD_ONLY:-0}" = 1 ] && { echo "built $CARGO_TARGET_DIR/release/adain-train (--features $FEATURES)"; exit 0; }

mkdir -p gpu /tmp/gpu-bin
cp "$CARGO_TARGET_DIR/release/adain" "$CARGO_TARGET_DIR/release/adain-train" /tmp/gpu-bin/
strip /tmp/gpu-bin/adain /tmp/gpu-bin/adain-train
tar -cJf gpu/bin.tar.xz -C /tmp/gpu-bin adain adain-train
cp -L weights/vgg19-relu4_1.safetensors gpu/
PY=$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)
for pair in content:coco style:wikiart; do   # photos and paintings, as scripts/setup.sh links them
    d=${pair%%:*} src=data/${pair#*:}
    [ -d "gpu/data/$d" ] || "$PY" scripts/pack_small_data.py "$src" "gpu/data/$d" --quality 85
done
grep -qx '/gpu/' .git/info/exclude 2>/dev/null || echo '/gpu/' >> .git/info/exclude
du -sh gpu
echo "next: the device tool's run with command 'BUDGET=555 bash scripts/gpu-train.sh', carry [\"gpu\"], timeout_s 600"
