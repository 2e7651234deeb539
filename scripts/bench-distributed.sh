#!/usr/bin/env bash
# Data-parallel scaling on this machine (README, "Training on several processes"):
# one process with 2 threads against `mpirun -n 2` with 1 thread per rank, the same
# global batch, from the published decoder on data/coco + data/wikiart. Reports the
# step time and the all-reduce time per step (log.jsonl's comm_secs_per_iter: flatten,
# MPI_Allreduce of the 3.5 M gradients, unflatten), first step excluded, into
# docs/bench-distributed.md. Wants a quiet machine: PAUSE_TRAIN=1 stops (SIGSTOP) any
# running adain-train for the duration and continues it afterwards.
#   usage: PAUSE_TRAIN=1 STEPS=6 CROPS="256 128" scripts/bench-distributed.sh
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-6}
CROPS=${CROPS:-256 128}
BATCH=${BATCH:-8}
BIN=${BIN:-target/release/adain-train}
[ -x "$BIN" ] || cargo build --release --features mpi --bin adain-train
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
paused=""
if [ "${PAUSE_TRAIN:-0}" = 1 ]; then
    paused=$(pgrep -f 'adain-train' || true)
    [ -n "$paused" ] && kill -STOP $paused
    trap '[ -n "$paused" ] && kill -CONT $paused' EXIT
fi
tmp=$(mktemp -d)
out=docs/bench-distributed.md
{
    echo "# Data-parallel training on this machine"
    echo
    echo "$(date -u +%F), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores;"
    echo "\`PAUSE_TRAIN=1 STEPS=$STEPS CROPS=\"$CROPS\" scripts/bench-distributed.sh\`, batch $BATCH (global), f32,"
    echo "from weights/decoder.safetensors; means over steps 2..$STEPS."
    echo
    echo "| crop | run | s / step | all-reduce s / step | images / s |"
    echo "|---|---|---|---|---|"
} > "$out"
for crop in $CROPS; do
    common=(--content data/coco --style data/wikiart --init-decoder weights/decoder.safetensors
        --crop-size "$crop" --load-size "$crop" --batch-size "$BATCH" --max-iter "$STEPS"
        --log-every 1 --sample-every 100000 --save-every 100000 --seed 11)
    "$BIN" "${common[@]}" --threads 2 --out "$tmp/one$crop" 2>/dev/null
    mpirun -n 2 "$BIN" "${common[@]}" --threads 1 --out "$tmp/two$crop" 2>/dev/null
    for run in one two; do
        python3 - "$tmp/$run$crop/log.jsonl" "$crop" "$run" "$BATCH" >> "$out" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])][1:]
s = sum(r["secs_per_iter"] for r in recs) / len(recs)
c = [r.get("comm_secs_per_iter") for r in recs]
comm = f"{sum(c) / len(c):.3f}" if all(x is not None for x in c) else "-"
name = {"one": "1 process x 2 threads", "two": "mpirun -n 2, 1 thread each"}[sys.argv[3]]
print(f"| {sys.argv[2]} | {name} | {s:.2f} | {comm} | {int(sys.argv[4]) / s:.2f} |")
EOF
    done
done
rm -rf "$tmp"
cat "$out"
