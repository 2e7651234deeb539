#!/usr/bin/env python3
"""Seed inputs for the fuzz targets (tests/fuzz/), small by design.

    python3 scripts/fuzz_seeds.py OUT_DIR

writes OUT_DIR/<target>/<name>: the fixtures that are small enough (images,
.pth files), images of every enabled format made with ffmpeg (when it is
installed), and hand-built safetensors files, checkpoints, TOML configs,
multipart bodies, webcam queries and ffprobe outputs. scripts/fuzz.sh runs
it; its output is not committed (the minimized corpus in tests/fuzz/corpus/ is).
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
BOUNDARY = "fuzzboundary"  # tests/fuzz/src/lib.rs BOUNDARY


def put(out, target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, bytes)]"""
    header, blob = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


def f32(n, v=0.5):
    return struct.pack("<%df" % n, *([v] * n))


def ffmpeg_images(out):
    if not shutil.which("ffmpeg"):
        print("ffmpeg not found: image seeds from the fixtures only", file=sys.stderr)
        return
    tmp = tempfile.mkdtemp()
    src = ["-f", "lavfi", "-i", "testsrc=size=24x20:rate=1", "-frames:v", "1"]
    made = [
        ("rgb.png", ["-pix_fmt", "rgb24"]),
        ("rgba.png", ["-pix_fmt", "rgba"]),
        ("grey16.png", ["-pix_fmt", "gray16be"]),
        ("grey.png", ["-pix_fmt", "gray"]),
        ("rgb48.png", ["-pix_fmt", "rgb48be"]),
        ("pal.png", ["-vf", "format=pal8", "-pix_fmt", "pal8"]),
        ("q.jpg", ["-pix_fmt", "yuvj420p", "-q:v", "8"]),
        ("grey.jpg", ["-pix_fmt", "gray", "-q:v", "8"]),
        ("lossy.webp", ["-c:v", "libwebp", "-quality", "30"]),
        ("lossless.webp", ["-c:v", "libwebp", "-lossless", "1"]),
        ("alpha.webp", ["-pix_fmt", "yuva420p", "-c:v", "libwebp"]),
        ("rgb.bmp", ["-pix_fmt", "bgr24"]),
        ("rgba.bmp", ["-pix_fmt", "bgra"]),
        ("pal.bmp", ["-pix_fmt", "pal8"]),
        ("raw.tif", ["-pix_fmt", "rgb24", "-compression_algo", "raw"]),
        ("lzw.tif", ["-pix_fmt", "rgb24", "-compression_algo", "lzw"]),
        ("deflate.tif", ["-pix_fmt", "rgba", "-compression_algo", "deflate"]),
        ("packbits.tif", ["-pix_fmt", "gray", "-compression_algo", "packbits"]),
        ("rgb48.tif", ["-pix_fmt", "rgb48le", "-compression_algo", "raw"]),
    ]
    for name, args in made:
        p = os.path.join(tmp, name)
        r = subprocess.run(["ffmpeg", "-v", "error", "-y", *src, *args, p],
                           capture_output=True)
        if r.returncode == 0 and os.path.getsize(p) <= 16384:
            data = open(p, "rb").read()
            put(out, "image", name, data)
            put(out, "mask", name, data)
        else:
            print(f"seed {name}: ffmpeg failed ({r.stderr.decode().strip()[-200:]})",
                  file=sys.stderr)
    # a label image: three grey levels
    p = os.path.join(tmp, "label.png")
    r = subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                        "color=c=black:size=24x20,drawbox=x=8:w=8:h=20:c=gray:t=fill,"
                        "drawbox=x=16:w=8:h=20:c=white:t=fill",
                        "-frames:v", "1", "-pix_fmt", "gray", p], capture_output=True)
    if r.returncode == 0:
        put(out, "mask", "label.png", open(p, "rb").read())
    # ffprobe output of small videos
    if shutil.which("ffprobe"):
        for name, args in [
            ("mp4", ["-f", "lavfi", "-i", "testsrc=size=32x24:rate=5", "-t", "1",
                     "-pix_fmt", "yuv420p", "-metadata:s:v", "rotate=90"]),
            ("mkv", ["-f", "lavfi", "-i", "testsrc=size=32x24:rate=5", "-f", "lavfi",
                     "-i", "sine=d=1", "-t", "1", "-c:v", "mjpeg"]),
        ]:
            p = os.path.join(tmp, "v." + name)
            r = subprocess.run(["ffmpeg", "-v", "error", "-y", *args, p], capture_output=True)
            if r.returncode != 0:
                continue
            j = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json",
                                "-show_streams", "-show_format", p], capture_output=True)
            put(out, "probe", name + ".json", j.stdout.replace(p.encode(), b"v." + name.encode()))
            t = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0",
                                "-show_entries", "packet=pts_time", "-of", "csv=p=0", p],
                               capture_output=True)
            put(out, "probe", name + ".csv", t.stdout)
    shutil.rmtree(tmp)


def main():
    out = sys.argv[1]
    # fixtures small enough to fuzz with
    for f in sorted(os.listdir(os.path.join(FIX, "images"))):
        data = open(os.path.join(FIX, "images", f), "rb").read()
        put(out, "image", f, data)
        put(out, "mask", f, data)
    for f in sorted(os.listdir(os.path.join(FIX, "pth"))):
        p = os.path.join(FIX, "pth", f)
        if f.endswith(".pth") and os.path.getsize(p) <= 65536:
            put(out, "pth", f, open(p, "rb").read())
    ffmpeg_images(out)

    # safetensors weight files
    put(out, "weights", "f32.safetensors",
        safetensors([("1.weight", "F32", [2, 2, 1, 1], f32(4)), ("1.bias", "F32", [2], f32(2))],
                    {"format": "adain-decoder", "format_version": "1"}))
    put(out, "weights", "f16.safetensors",
        safetensors([("conv1_1.weight", "F16", [1, 3, 1, 1], b"\x00\x3c" * 3),
                     ("conv1_1.bias", "BF16", [1], b"\x80\x3f")]))
    put(out, "weights", "f64.safetensors",
        safetensors([("x", "F64", [3], struct.pack("<3d", 1, 2, 3)),
                     ("empty", "F32", [0, 4], b"")]))
    put(out, "weights", "int.safetensors", safetensors([("i", "I64", [1], b"\x01" * 8)]))
    put(out, "weights", "pytorch_magic.bin", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8")

    # training checkpoints (tiny shapes: the real decoder is 14 MB)
    meta = {"format": "adain-decoder", "format_version": "1", "iteration": "1",
            "train_config": 'lr = 0.0001\nmax-iter = 10\n'}
    ts = [("1.weight", "F32", [1, 1, 3, 3], f32(9)), ("1.bias", "F32", [1], f32(1)),
          ("adam.m.1.weight", "F32", [1, 1, 3, 3], f32(9, 0.0)),
          ("adam.v.1.weight", "F32", [1, 1, 3, 3], f32(9, 0.0))]
    put(out, "checkpoint", "decoder.safetensors", safetensors(ts, meta))
    put(out, "checkpoint", "johnson.safetensors",
        safetensors([("conv1.conv2d.weight", "F32", [1, 1, 1, 1], f32(1))],
                    {"format": "johnson-transformer-net", "iteration": "7"}))
    put(out, "checkpoint", "nometa.safetensors", safetensors(ts[:2]))

    # --config TOML
    put(out, "config", "adain.toml", b"""model = "adain"
content = "coco"
style = "wikiart"
lr = 0.0001
lr-decay = 5e-5
max-iter = 160000
batch-size = 8
style-weight = 50.0
content-weight = 1.0
load-size = 512
crop-size = 256
save-every = 10000
log-every = 10
sample-every = 1000
keep = 3
seed = 0
threads = 0
precision = "f32"
device = "cpu"
vgg = "weights/vgg19-relu4_1.safetensors"
""")
    put(out, "config", "johnson.toml", b"""model = "johnson"
style = "data/style.jpg"
lr = 1e-3
lr-decay = 0.0
tv-weight = 1e-6
content-layer = "relu2_2"
crop-size = 256
load-size = 256
precision = "bf16"
init-decoder = "runs/a/decoder.safetensors"
""")
    put(out, "config", "bad.toml", b'model = "gan"\nbatch-size = 0\nunknown = [1, 2]\n')

    # multipart bodies for POST /v1/stylize
    png = open(os.path.join(FIX, "images", "palette.png"), "rb").read()

    def form(fields):
        b = b""
        for name, value, filename in fields:
            b += b"--" + BOUNDARY.encode() + b"\r\n"
            disp = b'Content-Disposition: form-data; name="' + name.encode() + b'"'
            if filename:
                disp += b'; filename="' + filename.encode() + b'"\r\nContent-Type: image/png'
            b += disp + b"\r\n\r\n" + value + b"\r\n"
        return b + b"--" + BOUNDARY.encode() + b"--\r\n"

    put(out, "server_form", "upload.bin",
        form([("content", png, "c.png"), ("style", png, "s.png"), ("alpha", b"0.5", None),
              ("format", b"png", None)]))
    put(out, "server_form", "gallery.bin",
        form([("content", png, "c.png"), ("style_id", b"palette", None),
              ("style_id", b"cmyk", None), ("style_weights", b"1,2", None),
              ("preserve_color", b"coral", None), ("content_size", b"64", None),
              ("style_size", b"32", None)]))
    put(out, "server_form", "mask.bin",
        form([("content", png, "c.png"), ("style_id", b"palette", None),
              ("style", png, "s.png"), ("mask", png, "m.png"), ("format", b"webp", None),
              ("preserve_color", b"luminance", None)]))
    put(out, "server_form", "bad.bin",
        form([("content", b"", "c.png"), ("bogus", b"1", None)]))

    # GET /v1/webcam queries
    for i, q in enumerate([
        "style_id=palette",
        "style_id=palette&style_id=cmyk&style_weights=1,3&alpha=0.5&temporal=stats",
        "style_id=cmyk&preserve_color=luminance&size=128&temporal=none&access_token=x",
        "style_id=nope&alpha=2&size=-1&temporal=flow&preserve_color=coral",
    ]):
        put(out, "webcam_query", f"q{i}.txt", q.encode())

    # ffprobe JSON by hand (the ffmpeg-made ones above are the real thing)
    put(out, "probe", "hand.json", json.dumps({
        "streams": [{"codec_type": "video", "codec_name": "h264", "width": 64, "height": 48,
                     "r_frame_rate": "30000/1001", "avg_frame_rate": "0/0", "nb_frames": "10",
                     "side_data_list": [{"rotation": -90}], "tags": {"rotate": "90"},
                     "disposition": {"attached_pic": 0}},
                    {"codec_type": "audio", "codec_name": "aac"}],
        "format": {"duration": "0.333"}}).encode())
    put(out, "probe", "times.csv", b"0.000000,\n0.033367,\n0.066733\n")


if __name__ == "__main__":
    main()
