#!/usr/bin/env bash
# The longer run of tests/server_faults.rs (issue 21, the server's part):
# CONNS connections at once (default 10,000; the test lifts --max-connections
# to fit) in ROUNDS rounds (default 6) and SLOW byte-a-second clients of
# each of four kinds (default 100),
# on the debug build the tests use. Prints the test's figures; keep them with
#   scripts/server-faults.sh | tee docs/server-faults.txt
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-10000}
SLOW=${SLOW:-100}
ROUNDS=${ROUNDS:-6}
# this shell and the test both need CONNS sockets, the server as many again
ulimit -n "$(ulimit -Hn)"
echo "# scripts/server-faults.sh: CONNS=$CONNS SLOW=$SLOW ROUNDS=$ROUNDS, $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# ulimit -n $(ulimit -n), somaxconn $(cat /proc/sys/net/core/somaxconn), $(git rev-parse --short HEAD)"
ADAIN_FAULT_CONNECTIONS=$CONNS ADAIN_FAULT_SLOW=$SLOW ADAIN_FAULT_ROUNDS=$ROUNDS \
  cargo test --locked --test server_faults -- --nocapture --test-threads 1 2>&1 \
  | grep -v '^\s*\(Compiling\|Finished\|Running\)'
