#!/usr/bin/env bash
# A real test clip for the video figures (README, "Video"): 240 frames,
# 640x360 at 24 fps, three shots cut together from the eval protocol's photos
# (never trained on), each with camera motion (pan, zoom, tilt) and an object
# moving across it (a second photo), plus a sine audio track.
#   bash scripts/make-clip.sh [OUT]    (default runs/clip/clip.mp4)
#   CLIP_MOTION=0.25 bash scripts/make-clip.sh   (runs/clip-motion0.25/clip.mp4)
#   bash scripts/make-clip.sh OUT BG0 BG1 BG2 OBJ0 OBJ1
# The second form puts other pictures through the same camera paths, e.g.
# stylized copies of the layers (scripts/stable-clip.sh: what a perfectly
# stable stylization of the clip would be). CLIP_MOTION=0.25 makes the slow
# variant: the same shots with a quarter of the motion (2 px a frame).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
c=data/eval/content
[ -e "$c/styleid_coco_00.png" ] || { echo "error: $c missing: run scripts/link-shared.sh" >&2; exit 1; }
source scripts/clip-layers.sh
out="${1:-$clip_dir/clip.mp4}"
mkdir -p "$(dirname "$out")"
m=$clip_motion
f=("${clip_filters[@]}")
l=()
for n in "${clip_pictures[@]}"; do l+=("$c/styleid_coco_$n.png"); done
[ $# -le 1 ] || { [ $# -eq 6 ] || { echo "usage: $0 [OUT [BG0 BG1 BG2 OBJ0 OBJ1]]" >&2; exit 2; }; l=("${@:2}"); }
d=3.3334  # 80 frames a shot at 24 fps
ffmpeg -v error -y \
  -loop 1 -framerate 24 -t $d -i "${l[0]}" \
  -loop 1 -framerate 24 -t $d -i "${l[1]}" \
  -loop 1 -framerate 24 -t $d -i "${l[2]}" \
  -loop 1 -framerate 24 -t $d -i "${l[3]}" \
  -loop 1 -framerate 24 -t $d -i "${l[4]}" \
  -f lavfi -t 10 -i "sine=frequency=330:sample_rate=48000" \
  -filter_complex "
    [0]${f[0]},crop=640:360:x='(iw-640)*$m*t/$d':y=400[bg0];
    [3]${f[3]},split=2[s0][s1];
    [bg0][s0]overlay=x='40+150*$m*t':y='60+40*$m*t'[a];
    [1]${f[1]},zoompan=z='1+0.8*$m*on/80':x='iw/2-iw/zoom/2':y='ih/2-ih/zoom/2':d=1:s=640x360:fps=24[bg1];
    [bg1][s1]overlay=x='450-120*$m*t':y='180-30*$m*t'[b];
    [2]${f[2]},crop=640:360:x=200:y='(ih-360)*$m*t/$d'[bg2];
    [4]${f[4]}[s3];
    [bg2][s3]overlay=x='520-140*$m*t':y='40+60*$m*t'[c];
    [a][b][c]concat=n=3:v=1:a=0,format=yuv420p[v]" \
  -map "[v]" -map 5:a -c:v libx264 -crf 12 -preset medium -r 24 -c:a aac -shortest "$out"
ffprobe -v error -select_streams v:0 -count_frames -show_entries stream=width,height,r_frame_rate,nb_read_frames -of compact "$out"
