#!/usr/bin/env python3
"""Load client for scripts/load-test.sh (Python standard library only).

  load_client.py images DIR N SIDE     write N distinct SIDE x SIDE BMP pictures
  load_client.py run URL DIR --n N --conc C --limit SECS --style-id ID [--rss-pid PID]
      POST N requests (the pictures of DIR in turn) at concurrency C to
      URL/v1/stylize, stop sending after SECS; print one JSON line: images/s,
      p50/p99 latency, status counts, the server's RSS (sampled) and VmHWM.
"""
import argparse
import http.client
import json
import os
import struct
import sys
import threading
import time
import urllib.parse


def write_bmp(path, side, seed):
    row = bytearray()
    rows = []
    for y in range(side):
        row = bytearray()
        for x in range(side):
            r = (x * 255 // side + seed * 37) % 256
            g = (y * 255 // side + seed * 91) % 256
            b = ((x ^ y) * 3 + seed * 53) % 256
            row += bytes((b, g, r))
        rows.append(bytes(row))
    pad = (4 - (side * 3) % 4) % 4
    data = b"".join(r + b"\0" * pad for r in reversed(rows))
    header = b"BM" + struct.pack("<IHHI", 54 + len(data), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 24, 0, len(data), 2835, 2835, 0, 0)
    with open(path, "wb") as f:
        f.write(header + info + data)


def form(content, style_id):
    boundary = "adain-load-7f3a"
    parts = [
        b"--%s\r\nContent-Disposition: form-data; name=\"content\"; filename=\"c.bmp\"\r\n"
        b"Content-Type: image/bmp\r\n\r\n" % boundary.encode() + content + b"\r\n",
        b"--%s\r\nContent-Disposition: form-data; name=\"style_id\"\r\n\r\n%s\r\n"
        % (boundary.encode(), style_id.encode()),
    ]
    body = b"".join(parts) + b"--%s--\r\n" % boundary.encode()
    return "multipart/form-data; boundary=" + boundary, body


def rss_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run(a):
    u = urllib.parse.urlparse(a.url)
    files = sorted(os.path.join(a.dir, f) for f in os.listdir(a.dir))
    bodies = []
    for f in files:
        with open(f, "rb") as fh:
            bodies.append(form(fh.read(), a.style_id))
    lock = threading.Lock()
    next_i = [0]
    results = []  # (status, seconds)
    deadline = time.monotonic() + a.limit
    samples = []
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            if a.rss_pid:
                samples.append(rss_kb(a.rss_pid, "VmRSS"))
            stop.wait(0.5)

    def worker():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        while True:
            with lock:
                i = next_i[0]
                if i >= a.n or time.monotonic() > deadline:
                    return
                next_i[0] += 1
            ct, body = bodies[i % len(bodies)]
            t = time.monotonic()
            try:
                conn.request("POST", "/v1/stylize", body=body, headers={"Content-Type": ct})
                r = conn.getresponse()
                r.read()
                status = r.status
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
            except (OSError, http.client.HTTPException) as e:
                status = "error: %s" % e
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
            with lock:
                results.append((status, time.monotonic() - t))

    st = threading.Thread(target=sampler, daemon=True)
    st.start()
    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(a.conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    stop.set()
    st.join()
    ok = sorted(s for st_, s in results if st_ == 200)
    counts = {}
    for st_, _ in results:
        counts[str(st_)] = counts.get(str(st_), 0) + 1

    def pct(p):
        if not ok:
            return None
        return ok[min(len(ok) - 1, int(round(p / 100 * (len(ok) - 1))))]

    rss = [s for s in samples if s]
    print(json.dumps({
        "conc": a.conc,
        "sent": len(results),
        "asked": a.n,
        "wall_s": round(wall, 2),
        "images_per_s": round(len(ok) / wall, 3) if wall > 0 else None,
        "p50_s": round(pct(50), 3) if ok else None,
        "p99_s": round(pct(99), 3) if ok else None,
        "status": counts,
        "rss_mb_first": round(rss[0] / 1024, 1) if rss else None,
        "rss_mb_last": round(rss[-1] / 1024, 1) if rss else None,
        "rss_mb_max": round(max(rss) / 1024, 1) if rss else None,
        "vmhwm_mb": round((rss_kb(a.rss_pid, "VmHWM") or 0) / 1024, 1) if a.rss_pid else None,
    }))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "images":
        d, n, side = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        os.makedirs(d, exist_ok=True)
        for i in range(n):
            write_bmp(os.path.join(d, "img%02d.bmp" % i), side, i)
        return
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["run"])
    p.add_argument("url")
    p.add_argument("dir")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--conc", type=int, default=1)
    p.add_argument("--limit", type=float, default=600)
    p.add_argument("--style-id", required=True)
    p.add_argument("--rss-pid", type=int)
    run(p.parse_args())


if __name__ == "__main__":
    main()
