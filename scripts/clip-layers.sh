# The test clip's pictures (data/eval/content/styleid_coco_NN.png) and the
# filter that brings each to the size the clip shows it at: three backgrounds
# (pan, zoom, tilt), then the two objects moving across them. Sourced by
# scripts/make-clip.sh (the camera paths start from these) and
# scripts/stable-clip.sh (which stylizes the pictures at these sizes), and
# scripts/bench-video.sh.
clip_pictures=(03 07 11 05 14)
clip_filters=("scale=1280:1280" "scale=1280:1280,crop=1280:720" "scale=1024:1024" "scale=150:150" "scale=120:120")
# CLIP_MOTION scales every motion of the clip (camera and objects; default 1:
# the pan and tilt move 8 px a frame, the zoom reaches 1.8x). A clip with other
# motion lives in its own folder, and its figures in their own file.
clip_motion="${CLIP_MOTION:-1}"
if [ "$clip_motion" = 1 ]; then
  clip_dir=runs/clip
  clip_doc=docs/bench-video.md
else
  clip_dir="runs/clip-motion$clip_motion"
  clip_doc="docs/bench-video-motion$clip_motion.md"
fi
