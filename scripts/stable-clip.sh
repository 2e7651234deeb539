#!/usr/bin/env bash
# What a perfectly stable stylization of the test clip would score: each of
# the clip's pictures (scripts/make-clip.sh) is stylized once, at the size the
# clip shows it, and the stylized pictures go through the same camera paths
# and cuts. The texture is then glued to the scene, so its flicker measures
# (E_fd, warping error) are what motion alone costs a stylized video: the
# floor a temporal method can reach without giving up texture.
#   bash scripts/stable-clip.sh [STYLE]  -> runs/clip/stable.mp4, runs/clip/stable.json
#   (CLIP_MOTION as in scripts/make-clip.sh: the same for that clip)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
B=target/release/adain
[ -x $B ] || cargo build --release --bin adain
style="${1:-data/eval/style/styleid_wikiart_03.png}"
c=data/eval/content
# each picture at the size the clip shows it (scripts/clip-layers.sh)
source scripts/clip-layers.sh
d=$clip_dir/stable-layers
rm -rf $d && mkdir -p $d/in $d/out
[ -e $clip_dir/clip.mp4 ] || bash scripts/make-clip.sh $clip_dir/clip.mp4
layers=()
for i in "${!clip_pictures[@]}"; do
  ffmpeg -v error -y -i "$c/styleid_coco_${clip_pictures[$i]}.png" -vf "${clip_filters[$i]}" "$d/in/layer$i.png"
  layers+=("$d/out/layer${i}_stylized_$(basename "${style%.*}").png")
done
$B stylize -c $d/in -s "$style" -o $d/out --content-size 0 --ext png -q
bash scripts/make-clip.sh $clip_dir/stable.mp4 "${layers[@]}"
$B eval-video --input $clip_dir/clip.mp4 --output $clip_dir/stable.mp4 --style "$style" --json $clip_dir/stable.json
