#!/usr/bin/env bash
# The video figures of the README ("Video"): flicker and style of each
# --temporal mode on a real 240-frame 640x360 clip (scripts/make-clip.sh),
# and frames per second on this CPU beside `adain stylize` of the same frames.
#   bash scripts/bench-video.sh [STYLE]   -> docs/bench-video.md, runs/clip/*.json
#   CLIP_MOTION=0.25 bash scripts/bench-video.sh   the same on the slow variant
#     of the clip -> docs/bench-video-motion0.25.md, runs/clip-motion0.25/
# Pause background work first: the fps figures are wall time.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
B=target/release/adain
[ -x $B ] || cargo build --release --bin adain
style="${1:-data/eval/style/styleid_wikiart_03.png}"
source scripts/clip-layers.sh
out=$clip_dir
clip=$out/clip.mp4
[ -e $clip ] || bash scripts/make-clip.sh $clip
# PHASE=quality (flicker and style: any load), speed (wall time: a quiet
# machine) or all (default); the table is written from what exists.
phase=${PHASE:-all}
modes="none stats flow"
# the quality rows: NAME=FLAGS (the modes, and the settings the default was chosen against)
variants=("none=--temporal none" "stats=--temporal stats" "flow=--temporal flow"
  "flow-0.3=--temporal flow --flow-strength 0.3" "flow-0.4=--temporal flow --flow-strength 0.4"
  "flow-0.6=--temporal flow --flow-strength 0.6"
  "flow-plain-0.4=--temporal flow --flow-strength 0.4 --flow-blend plain")
if [ "$phase" != speed ]; then
  for v in "${variants[@]}"; do
    name=${v%%=*}
    # shellcheck disable=SC2086 # the flags split into words
    $B video -c $clip -s "$style" -o $out/$name.mp4 --overwrite -q --metrics --json $out/$name.json ${v#*=}
  done
  # the floor: the clip's pictures stylized once and moved by the camera
  bash scripts/stable-clip.sh "$style"
fi
if [ "$phase" != quality ]; then
  for m in $modes; do
    $B video -c $clip -s "$style" -o $out/$m-speed.mp4 --overwrite -q --json $out/$m-speed.json --temporal $m
  done
  # adain stylize on the same frames, one process for all (the style encoded once)
  rm -rf $out/frames $out/frames-styled && mkdir -p $out/frames
  ffmpeg -v error -i $clip -frames:v 48 $out/frames/f%03d.png
  t0=$(date +%s.%N)
  $B stylize -c $out/frames -s "$style" -o $out/frames-styled --content-size 0 --ext png -q
  t1=$(date +%s.%N)
  python3 -c "print(f'{48/($t1-$t0):.2f}')" > $out/stylize-fps.txt
fi
stylize_fps=$(cat $out/stylize-fps.txt 2>/dev/null || echo "?")
python3 - "$style" "$stylize_fps" "$out" "$clip_doc" "$clip_motion" <<'PY'
import json, sys, platform
style, sfps, out, doc, motion = sys.argv[1:6]
cpu = next((l.split(':',1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor())
rows = []
base = json.load(open(f'{out}/none.json'))
labels = {
    'none': '`none`', 'stats': '`stats`', 'flow': '`flow` (default: keep-contrast, 0.35)',
    'flow-0.3': '`flow --flow-strength 0.3`', 'flow-0.4': '`flow --flow-strength 0.4`',
    'flow-0.6': '`flow --flow-strength 0.6`',
    'flow-plain-0.4': '`flow --flow-strength 0.4 --flow-blend plain` (the old default)',
    'stable': 'perfectly stable (`scripts/stable-clip.sh`: the floor)',
}
for name in labels:
    try: q = json.load(open(f'{out}/{name}.json'))
    except FileNotFoundError: continue
    try: s = json.load(open(f'{out}/{name}-speed.json'))
    except FileNotFoundError: s = {'fps': float('nan')}
    fps = '-' if s['fps'] != s['fps'] else f"{s['fps']:.2f}"
    st = q.get('style', q)  # adain video nests them, eval-video does not
    pct = lambda v, b: '' if name == 'none' else f" ({100*(v/b-1):+.0f}%)"
    label = labels[name]
    rows.append(f"| {label} | {q['e_fd']:.5f}{pct(q['e_fd'], base['e_fd'])} "
                f"| {q['e_warp']:.5f}{pct(q['e_warp'], base['e_warp'])} "
                f"| {st['style_musigma']:.4g}{pct(st['style_musigma'], base['style']['style_musigma'])} "
                f"| {st['content_in']:.3f} | {fps} |")
env, scaled = ('', '') if motion == '1' else (f'CLIP_MOTION={motion} ', f", at {motion} of the default clip's motion")
md = f"""# Video: flicker, style and speed of each `--temporal` mode

`bash scripts/bench-video.sh` on {cpu}, 2 threads, f32, the release build.
Clip: `{env}scripts/make-clip.sh`, 240 frames of 640x360 at 24 fps, three shots (pan, zoom, tilt)
with an object moving across each, cut together{scaled}. Style: `{style}`.
E_fd and warping error: lower is steadier (the warping error uses Farneback flow; the flow
mode uses DIS). Style metrics: `adain eval`'s, on 8 frames spread over the clip
(style_musigma lower = closer to the style). fps: the whole command (decode, stylize,
encode H.264) without `--metrics`.

| mode | E_fd | warping error | style_musigma | content_in | fps |
|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

{f'`adain stylize` on the first 48 frames as PNGs, one process: {sfps} frames/s.' if sfps != '?' else 'fps: not measured on this clip (PHASE=speed; see docs/bench-video.md).'}
"""
open(doc, 'w').write(md)
print(md)
PY
[ "$clip_motion" = 1 ] || { echo "wrote $clip_doc"; exit 0; }
# the README's frame strip: input frames over the flow mode's, four moments of the clip
ffmpeg -v error -y -i $clip -i $out/flow.mp4 -filter_complex "
  [0]select='eq(n\,12)+eq(n\,60)+eq(n\,130)+eq(n\,200)',scale=320:180,tile=4x1[a];
  [1]select='eq(n\,12)+eq(n\,60)+eq(n\,130)+eq(n\,200)',scale=320:180,tile=4x1[b];
  [a][b]vstack" -frames:v 1 -q:v 3 docs/video-strip.jpg
echo "wrote docs/bench-video.md, docs/video-strip.jpg"
