#!/usr/bin/env bash
# Bounded load test of `adain serve` on loopback: N requests of SIDE x SIDE
# pictures (one gallery style, JPEG out) at each concurrency, each level
# stopped after LIMIT seconds; then `adain stylize` back to back on CLI_N of
# the same pictures (one process, model loaded once) for the ratio.
# Prints one JSON line per level (images/s, p50/p99 latency, status counts,
# server RSS sampled every 0.5 s and its VmHWM) and a summary table.
#   N=200 CONCS="1 4 16" SIDE=512 LIMIT=900 CLI_N=40 scripts/load-test.sh
#   PAUSE_TRAIN=1 ...   stops a running adain-train (SIGSTOP) for the
#                       measurement and resumes it (SIGCONT) on exit
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
N=${N:-200}
CONCS=${CONCS:-"1 4 16"}
SIDE=${SIDE:-512}
LIMIT=${LIMIT:-900}
CLI_N=${CLI_N:-40}
bin=target/release/adain
[ -x "$bin" ] || cargo build --release --locked --bin adain

work=$(mktemp -d)
server=""
paused=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  [ -n "$paused" ] && kill -CONT $paused 2>/dev/null && echo "resumed adain-train ($paused)" >&2 || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ "${PAUSE_TRAIN:-0}" = 1 ]; then
  paused=$(pgrep -f adain-train | tr '\n' ' ' || true)
  [ -n "$paused" ] && kill -STOP $paused && echo "paused adain-train ($paused)" >&2
fi

python3 scripts/load_client.py images "$work/img" 8 "$SIDE"
mkdir -p "$work/gallery" "$work/cli"
cp examples/painting.jpg "$work/gallery/painting.jpg"
for i in $(seq 0 $((CLI_N - 1))); do
  cp "$work/img/img0$((i % 8)).bmp" "$work/cli/c$(printf %03d "$i").bmp"
done

"$bin" serve --host 127.0.0.1 --port 0 --styles "$work/gallery" >"$work/server.out" 2>"$work/server.err" &
server=$!
for _ in $(seq 600); do
  url=$(sed -n 's/^listening on //p' "$work/server.out")
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { cat "$work/server.err" >&2; echo "error: the server did not start" >&2; exit 1; }
echo "server $url (pid $server), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# warm-up (not counted)
python3 scripts/load_client.py run "$url" "$work/img" --n 2 --conc 1 --style-id painting >/dev/null

for c in $CONCS; do
  python3 scripts/load_client.py run "$url" "$work/img" --n "$N" --conc "$c" \
    --limit "$LIMIT" --style-id painting --rss-pid "$server" | tee -a "$work/levels.jsonl"
done
hwm=$(awk '/VmHWM/ {print $2}' /proc/$server/status)
kill -TERM "$server"; wait "$server" || true; server=""

t0=$(date +%s.%N)
"$bin" stylize -q -c "$work/cli" -s examples/painting.jpg -o "$work/out" --ext jpg
t1=$(date +%s.%N)
cli_rate=$(python3 -c "print(round($CLI_N / ($t1 - $t0), 3))")
echo "{\"cli_back_to_back\": {\"images\": $CLI_N, \"seconds\": $(python3 -c "print(round($t1 - $t0, 2))"), \"images_per_s\": $cli_rate}, \"server_vmhwm_mb\": $(python3 -c "print(round($hwm / 1024, 1))")}"

python3 - "$work/levels.jsonl" "$cli_rate" <<'PY'
import json, sys
cli = float(sys.argv[2])
print("| concurrency | sent | images/s | vs CLI | p50 s | p99 s | statuses | RSS MB first/last/max |")
print("|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    r = json.loads(line)
    ratio = r["images_per_s"] / cli if r["images_per_s"] else 0
    st = ", ".join(f"{k}: {v}" for k, v in sorted(r["status"].items()))
    print(f"| {r['conc']} | {r['sent']}/{r['asked']} | {r['images_per_s']} | {ratio:.2f} | {r['p50_s']} | {r['p99_s']} | {st} | {r['rss_mb_first']}/{r['rss_mb_last']}/{r['rss_mb_max']} |")
print(f"| CLI back to back | | {cli} | 1.00 | | | | |")
PY
