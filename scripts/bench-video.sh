#!/usr/bin/env bash
# The video figures of the README ("Video"): flicker and style of each
# --temporal mode on a real 240-frame 640x360 clip (scripts/make-clip.sh),
# and frames per second on this CPU beside `adain stylize` of the same frames.
#   bash scripts/bench-video.sh [STYLE]   -> docs/bench-video.md, runs/clip/*.json
# Pause background work first: the fps figures are wall time.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
B=target/release/adain
[ -x $B ] || cargo build --release --bin adain
style="${1:-data/eval/style/styleid_wikiart_03.png}"
clip=runs/clip/clip.mp4
[ -e $clip ] || bash scripts/make-clip.sh $clip
out=runs/clip
run() { # name, args...: quality (with --metrics) and speed (without) runs
  local name=$1; shift
  $B video -c $clip -s "$style" -o $out/$name.mp4 --overwrite -q --metrics --json $out/$name.json "$@"
  $B video -c $clip -s "$style" -o $out/$name-speed.mp4 --overwrite -q --json $out/$name-speed.json "$@"
}
run none --temporal none
run stats --temporal stats
run flow --temporal flow
# adain stylize on the same frames, one process for all (the style encoded once)
rm -rf $out/frames $out/frames-styled && mkdir -p $out/frames
ffmpeg -v error -i $clip -frames:v 48 $out/frames/f%03d.png
t0=$(date +%s.%N)
$B stylize -c $out/frames -s "$style" -o $out/frames-styled --content-size 0 --ext png -q
t1=$(date +%s.%N)
stylize_fps=$(python3 -c "print(f'{48/($t1-$t0):.2f}')")
python3 - "$style" "$stylize_fps" <<'PY'
import json, sys, platform
style, sfps = sys.argv[1], sys.argv[2]
cpu = next((l.split(':',1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor())
rows = []
base = json.load(open('runs/clip/none.json'))
for name in ['none', 'stats', 'flow']:
    q = json.load(open(f'runs/clip/{name}.json')); s = json.load(open(f'runs/clip/{name}-speed.json'))
    st = q['style']
    rel = lambda k, v: f"{100*(v/base[k]-1):+.0f}%" if name != 'none' else ''
    rows.append(f"| `{name}` | {q['e_fd']:.5f} {rel('e_fd', q['e_fd'])} | {q['e_warp']:.5f} {rel('e_warp', q['e_warp'])} "
                f"| {st['style_musigma']:.4g} {'' if name=='none' else f'{100*(st['style_musigma']/base['style']['style_musigma']-1):+.1f}%'} "
                f"| {st['content_in']:.3f} | {s['fps']:.2f} |")
md = f"""# Video: flicker, style and speed of each `--temporal` mode

`bash scripts/bench-video.sh` on {cpu}, 2 threads, f32, the release build.
Clip: `scripts/make-clip.sh`, 240 frames of 640x360 at 24 fps, three shots (pan, zoom, tilt)
with an object moving across each, cut together. Style: `{style}`.
E_fd and warping error: lower is steadier (the warping error uses Farneback flow; the flow
mode uses DIS). Style metrics: `adain eval`'s, on 8 frames spread over the clip
(style_musigma lower = closer to the style). fps: the whole command (decode, stylize,
encode H.264) without `--metrics`.

| mode | E_fd | warping error | style_musigma | content_in | fps |
|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

`adain stylize` on the first 48 frames as PNGs, one process: {sfps} frames/s.
"""
open('docs/bench-video.md', 'w').write(md)
print(md)
PY
