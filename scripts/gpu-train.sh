#!/usr/bin/env bash
# One prepared run on a lent GPU machine (the project's `device` tool): check
# that the CUDA build agrees with the CPU path, time it beside PyTorch on the
# same GPU, then train the decoder further until the time budget is spent.
#
# The machine has no Rust toolchain and no network, and at most 64 MiB travel
# with the working tree, so everything comes in GPU_DIR (default gpu/, an
# ignored folder), made on the developer's machine:
#   GPU_DIR/bin.tar.xz        adain and adain-train built with `--features cuda`
#   GPU_DIR/vgg19-relu4_1.safetensors
#   GPU_DIR/data/{content,style}   scripts/pack_small_data.py of data/train (128 px)
# Results go to $OUT (what the device tool brings back; at most 8 files):
# report.txt, log.jsonl, config.toml, the final decoder (f32) and a few
# intermediate ones (f16) for scoring with `adain eval` back home.
#
# usage: BUDGET=540 scripts/gpu-train.sh   (BUDGET: seconds for the whole script)
# A dry run on any machine: DEV=cpu BIN_DIR=target/release WORK=stylize_256 BUDGET=200 scripts/gpu-train.sh
set -u
T0=$(date +%s)
BUDGET=${BUDGET:-540}
G=${GPU_DIR:-gpu}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/report.txt") 2>&1
left() { echo $((T0 + BUDGET - $(date +%s))); }
say() { echo "== [$(($(date +%s) - T0)) s] $*"; }

say "machine"
nvidia-smi -L
nproc
# The CUDA libraries the binaries link against (cuBLAS, cuRAND, NVRTC, cudart 13)
# come with the machine's PyTorch wheels; the driver's libcuda from the host.
NV=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null)
LIBS=$([ -n "$NV" ] && ls -d "$NV"/*/lib 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="$LIBS/usr/local/nvidia/lib64:/usr/local/nvidia/lib:${LD_LIBRARY_PATH:-}"
DEV=${DEV:-cuda}
B=${BIN_DIR:-/tmp/bin}
if [ -z "${BIN_DIR:-}" ]; then mkdir -p $B && tar -xJf "$G/bin.tar.xz" -C $B || exit 1; fi
if ldd $B/adain | grep 'not found'; then exit 1; fi
cp "$G/vgg19-relu4_1.safetensors" weights/ || exit 1
export ADAIN_WEIGHTS=$PWD/weights

C=$(ls "$G"/data/content | head -1)
S=$(ls "$G"/data/style | head -1)
say "stylize: $DEV against cpu ($C x $S, 256 px, published decoder)"
for d in cpu $DEV; do
    $B/adain stylize -c "$G/data/content/$C" -s "$G/data/style/$S" -o /tmp/st_$d.png \
        --content-size 256 --style-size 256 --device $d --overwrite -q || { echo "stylize on $d failed"; exit 1; }
done
cp /tmp/st_$DEV.png "$OUT/stylized_$DEV.png"
DEV=$DEV python3 - <<'EOF'
import os
import numpy as np
from PIL import Image
a = np.asarray(Image.open("/tmp/st_cpu.png"), dtype=np.int16)
b = np.asarray(Image.open(f"/tmp/st_{os.environ['DEV']}.png"), dtype=np.int16)  # same file in a dry run
d = np.abs(a - b)
print(f"stylized 8-bit images: shape {a.shape}, max |cpu - cuda| = {d.max()}, mean = {d.mean():.4f}, pixels differing = {(d > 0).mean():.4%}")
EOF

say "training: 5 steps on cpu and on $DEV, same seed and data"
rm -rf /tmp/par_ref /tmp/par_dev
for r in ref dev; do
    d=$([ $r = ref ] && echo cpu || echo $DEV)
    $B/adain-train --content "$G/data/content" --style "$G/data/style" --out /tmp/par_$r \
        --device $d --init-decoder weights/decoder.safetensors --seed 7 --lr 3e-4 \
        --style-weight 50 --load-size 128 --crop-size 128 --max-iter 5 --log-every 1 \
        --save-every 5 --sample-every 100000 >/tmp/par_$r.log 2>&1 || { tail -5 /tmp/par_$r.log; exit 1; }
done
DEV=$DEV python3 - <<'EOF'
import json, os
dev = os.environ["DEV"]
rows = {r: [json.loads(l) for l in open(f"/tmp/par_{r}/log.jsonl")] for r in ("ref", "dev")}
worst = 0.0
for a, b in zip(rows["ref"], rows["dev"]):
    for k in ("loss_content", "loss_style"):
        r = abs(a[k] - b[k]) / abs(a[k])
        worst = max(worst, r)
    print(f"iter {a['iter']}: content {a['loss_content']:.6g} / {b['loss_content']:.6g}, style {a['loss_style']:.6g} / {b['loss_style']:.6g}, s/step {a['secs_per_iter']:.3f} / {b['secs_per_iter']:.3f}")
print(f"largest relative loss difference cpu vs {dev} over 5 steps: {worst:.2e}")
EOF

say "bench: adain (candle CUDA) and PyTorch on this GPU, f32"
W=${WORK:-stylize_256,stylize_cached_256,stylize_512,stylize_cached_512,stylize_1024,stylize_2048,train_b8_256}
timeout 100 $B/adain bench --device $DEV --sizes 256,512,1024,2048 --repeat 5 --train-steps 5 --only $W --json
timeout 100 python3 scripts/bench_torch.py --device $DEV --only $W --repeat 5 --train-steps 5 --threads "$(nproc)"

say "train: resume the published decoder on the packed data until the budget ends"
R=/tmp/run
rm -rf $R
T=$(($(left) - 45))
echo "training for $T s"
$B/adain-train --content "$G/data/content" --style "$G/data/style" --out $R \
    --device $DEV --init-decoder weights/decoder.safetensors --seed 4 --lr 1e-4 --lr-decay 5e-5 \
    --batch-size 8 --style-weight 3 --load-size 128 --crop-size 128 --save-every 500 \
    --log-every 10 --sample-every 1000000 --keep 1000 --threads "$(nproc)" >/tmp/train.log 2>&1 &
# One SIGINT when the time is up: the trainer finishes its step and saves. (Not
# `timeout -s INT`: it signals the child and then its whole process group, and a
# second Ctrl-C makes adain-train quit without saving.)
P=$!
for ((i = 0; i < T; i++)); do kill -0 $P 2>/dev/null || break; sleep 1; done
kill -INT $P 2>/dev/null
wait $P
echo "adain-train exit $?"
tail -3 /tmp/train.log
tail -2 $R/log.jsonl
cp $R/log.jsonl $R/config.toml "$OUT"/

say "export"
$B/adain-train export $R --out "$OUT/decoder_final.safetensors" --dtype f32
mapfile -t CK < <(ls $R/checkpoints | sort)
n=${#CK[@]}
for i in $((n / 4)) $((n / 2)) $((3 * n / 4)); do
    [ "$i" -ge 1 ] && [ "$i" -lt "$n" ] || continue
    c=${CK[$((i - 1))]}
    it=$(echo "$c" | tr -dc 0-9 | sed 's/^0*//')
    mkdir -p /tmp/x$it/checkpoints && cp $R/config.toml /tmp/x$it/ && cp $R/checkpoints/$c /tmp/x$it/checkpoints/
    $B/adain-train export /tmp/x$it --out "$OUT/decoder_$it.safetensors" --dtype f16
done
ls -la "$OUT"
say "done"
