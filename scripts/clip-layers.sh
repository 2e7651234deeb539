# The test clip's pictures (data/eval/content/styleid_coco_NN.png) and the
# filter that brings each to the size the clip shows it at: three backgrounds
# (pan, zoom, tilt), then the two objects moving across them. Sourced by
# scripts/make-clip.sh (the camera paths start from these) and
# scripts/stable-clip.sh (which stylizes the pictures at these sizes).
clip_pictures=(03 07 11 05 14)
clip_filters=("scale=1280:1280" "scale=1280:1280,crop=1280:720" "scale=1024:1024" "scale=150:150" "scale=120:120")
