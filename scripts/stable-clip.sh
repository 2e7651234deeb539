#!/usr/bin/env bash
# What a perfectly stable stylization of the test clip would score: each of
# the clip's pictures (scripts/make-clip.sh) is stylized once, at the size the
# clip shows it, and the stylized pictures go through the same camera paths
# and cuts. The texture is then glued to the scene, so its flicker measures
# (E_fd, warping error) are what motion alone costs a stylized video: the
# floor a temporal method can reach without giving up texture.
#   bash scripts/stable-clip.sh [STYLE]  -> runs/clip/stable.mp4, runs/clip/stable.json
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
B=target/release/adain
[ -x $B ] || cargo build --release --bin adain
style="${1:-data/eval/style/styleid_wikiart_03.png}"
c=data/eval/content
d=runs/clip/stable-layers
rm -rf $d && mkdir -p $d/in $d/out
[ -e runs/clip/clip.mp4 ] || bash scripts/make-clip.sh runs/clip/clip.mp4
# the sizes make-clip.sh scales (and crops) each picture to
layer() { ffmpeg -v error -y -i "$c/styleid_coco_$1.png" -vf "$2" "$d/in/$3.png"; }
layer 03 scale=1280:1280 bg0
layer 07 scale=1280:1280,crop=1280:720 bg1
layer 11 scale=1024:1024 bg2
layer 05 scale=150:150 obj0
layer 14 scale=120:120 obj1
$B stylize -c $d/in -s "$style" -o $d/out --content-size 0 --ext png -q
o() { echo "$d/out/$1_stylized_$(basename "${style%.*}").png"; }
bash scripts/make-clip.sh runs/clip/stable.mp4 "$(o bg0)" "$(o bg1)" "$(o bg2)" "$(o obj0)" "$(o obj1)"
$B eval-video --input runs/clip/clip.mp4 --output runs/clip/stable.mp4 --style "$style" --json runs/clip/stable.json
