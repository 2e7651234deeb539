#!/usr/bin/env bash
# Fuzzes everything that reads bytes from a user or a client (tests/fuzz/):
# builds every target, runs them one after the other (one process, one job),
# keeps the minimized corpus in tests/fuzz/corpus/<target>/ and writes
# docs/fuzz-table.md (target, executions, coverage, corpus, crashes, timeouts,
# OOMs, the caps and the command).
#
#   scripts/fuzz.sh [--minutes M] [--runs N] [--no-cmin] [TARGET...]
#
# Each target runs until N executions (default 1,200,000: 9 targets make
# over 10 million) or M minutes (default 20), whichever comes first. A
# crash, timeout or OOM stops that target (libFuzzer's way); its input is
# left in tests/fuzz/work/artifacts/<target>/: fix the cause, copy the input
# to tests/fuzz/regressions/<target>/ (tests/fuzz_corpus.rs replays it),
# run again.
#
# Tool: cargo-fuzz (libFuzzer) with `-s none`, on stable Rust; nothing is
# installed here: without cargo-fuzz it says so and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=20
RUNS=1200000
CMIN=1
TARGETS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --no-cmin) CMIN=0; shift ;;
        -h|--help) sed -n 2,18p "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) TARGETS+=("$1"); shift ;;
    esac
done
ALL=(image mask weights pth config checkpoint server_form webcam_query probe)
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL[@]}")

# libFuzzer's -max_len per target (bytes): a little above the largest seed.
max_len() {
    case "$1" in
        config) echo 4096 ;;
        webcam_query) echo 1024 ;;
        probe) echo 8192 ;;
        *) echo 16384 ;;
    esac
}
# Caps (the allocator cap is MAX_ALLOC in tests/fuzz/src/lib.rs, 512 MiB).
TIMEOUT_S=10
RSS_MB=2048

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed: cargo install cargo-fuzz (0.13 or later)" >&2
    exit 1
fi

FUZZ=(cargo fuzz)
BUILD_FLAGS=(--fuzz-dir tests/fuzz -s none -O --codegen-units 16)
W=tests/fuzz/work
mkdir -p "$W"
echo "== build (release as shipped: no debug assertions or overflow checks, as every profile of this crate; no sanitizer)"
"${FUZZ[@]}" build "${BUILD_FLAGS[@]}"
echo "== seeds"
rm -rf "$W/seeds"
python3 scripts/fuzz_seeds.py "$W/seeds"

started=$(date -u +%FT%TZ)
t0=$(date +%s)
rows=()
total=0
for t in "${TARGETS[@]}"; do
    corpus="$W/corpus/$t"
    art="$W/artifacts/$t"
    log="$W/logs/$t.log"
    rm -rf "$corpus"
    mkdir -p "$corpus" "$art" "$W/logs"
    for d in tests/fuzz/corpus/$t tests/fuzz/regressions/$t "$W/seeds/$t"; do
        [ -d "$d" ] && cp -f "$d"/* "$corpus"/ 2>/dev/null || true
    done
    before=$(ls "$art" | wc -l)
    len=$(max_len "$t")
    args=(-max_len="$len" -timeout="$TIMEOUT_S" -rss_limit_mb="$RSS_MB"
          -runs="$RUNS" -max_total_time=$((MINUTES * 60)) -print_final_stats=1
          -artifact_prefix="$art/")
    echo "== $t: up to $RUNS runs or $MINUTES min (max_len $len)"
    rc=0
    ts=$(date +%s)
    "${FUZZ[@]}" run "${BUILD_FLAGS[@]}" "$t" "$corpus" -- "${args[@]}" >"$log" 2>&1 || rc=$?
    secs=$(($(date +%s) - ts))
    # what libFuzzer printed last (absent pieces are blank, not an error)
    last() { { grep -o "$1" "$log" || true; } | tail -1 | awk '{print $NF}'; }
    execs=$(last 'stat::number_of_executed_units: *[0-9]*')
    [ -z "$execs" ] && execs=$(last '^#[0-9]*' | tr -d '#')
    execs=${execs:-0}
    rate=$(last 'stat::average_exec_per_sec: *[0-9]*')
    rss=$(last 'stat::peak_rss_mb: *[0-9]*')
    cov=$({ grep -o 'cov: [0-9]* ft: [0-9]*' "$log" || true; } | tail -1 | sed 's/cov: //; s/ ft: /\//')
    # findings of this run: libFuzzer names them crash-/timeout-/oom-; the
    # allocator cap (an abort) is a crash file, counted as an OOM here
    crashes=0; timeouts=0; ooms=0
    for f in $(ls "$art" | tail -n +$((before + 1)) || true); do
        case "$f" in
            crash-*) if grep -q 'allocation cap exceeded' "$log"; then ooms=$((ooms + 1)); else crashes=$((crashes + 1)); fi ;;
            timeout-*) timeouts=$((timeouts + 1)) ;;
            oom-*) ooms=$((ooms + 1)) ;;
        esac
    done
    if [ "$rc" -ne 0 ] && [ $((crashes + timeouts + ooms)) -eq 0 ]; then
        echo "fuzz.sh: $t exited with $rc and no finding: see $log" >&2
        crashes="? (exit $rc)"
    fi
    if [ "$CMIN" -eq 1 ] && [ "$rc" -eq 0 ]; then
        # minimized to the inputs that reach every edge (not every hit-count
        # bucket: -use_counters=0), which keeps the committed corpus small
        "${FUZZ[@]}" cmin "${BUILD_FLAGS[@]}" "$t" "$corpus" -- -max_len="$len" \
            -timeout="$TIMEOUT_S" -rss_limit_mb="$RSS_MB" -use_counters=0 >"$W/logs/$t.cmin.log" 2>&1
        rm -rf "tests/fuzz/corpus/$t"
        mkdir -p "tests/fuzz/corpus/$t"
        cp "$corpus"/* "tests/fuzz/corpus/$t"/
    fi
    kept=$(ls "tests/fuzz/corpus/$t" 2>/dev/null | wc -l)
    kb=$(($(cat "tests/fuzz/corpus/$t"/* 2>/dev/null | wc -c) / 1024))
    mkdir -p "$W/results"
    echo "$execs" >"$W/results/$t.execs"
    echo "| $t | $execs | $secs | ${rate:-?} | ${cov:-?} | $kept files, ${kb:-0} KiB | $crashes | $timeouts | $ooms | $len | ${rss:-?} | $(date -u +%FT%TZ) |" >"$W/results/$t.row"
    echo "   $t: $execs runs, cov/ft $cov, crashes $crashes, timeouts $timeouts, OOMs $ooms"
done
mins=$((($(date +%s) - t0) / 60))
# the table: every target's latest run (a rerun of some targets replaces their rows)
for t in "${ALL[@]}"; do
    [ -f "$W/results/$t.row" ] || continue
    rows+=("$(cat "$W/results/$t.row")")
    total=$((total + $(cat "$W/results/$t.execs")))
done

{
    echo "# Fuzzing: last run"
    echo
    echo "Written by \`scripts/fuzz.sh\` (this invocation: started $started, $mins min, targets ${TARGETS[*]};"
    echo "$(nproc) CPUs, one fuzzer at a time). Each row is that target's latest run."
    echo "Tool: cargo-fuzz $(cargo fuzz --version | awk '{print $2}') (libFuzzer), \`-s none\` on $(rustc --version | awk '{print $1, $2}')."
    echo
    echo "| target | executions | seconds | exec/s | coverage (cov/ft) | corpus kept | crashes | timeouts | OOMs | max_len | peak RSS MB | finished |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    echo "| **all** | **$total** | | | | | | | | | | |"
    echo
    echo "Caps: live heap <= 512 MiB and no single allocation above it (the counting"
    echo "allocator of tests/fuzz/src/lib.rs aborts: an OOM here), -rss_limit_mb=$RSS_MB,"
    echo "-timeout=$TIMEOUT_S s per input; images at max_pixels = 1,048,576 (1 MP)."
    echo "Per target: -runs=$RUNS, -max_total_time=$((MINUTES * 60)) s."
    echo
    echo "Command: \`scripts/fuzz.sh --minutes $MINUTES --runs $RUNS${TARGETS:+ ${TARGETS[*]}}\`; each target is"
    echo "\`cargo fuzz run ${BUILD_FLAGS[*]} TARGET tests/fuzz/work/corpus/TARGET -- -max_len=L -timeout=$TIMEOUT_S -rss_limit_mb=$RSS_MB -runs=$RUNS -max_total_time=$((MINUTES * 60))\`."
} >docs/fuzz-table.md
echo "== wrote docs/fuzz-table.md ($total executions in all)"
