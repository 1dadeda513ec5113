#!/usr/bin/env bash
# The demo behind `go tool task demo`: start orderflow serve on the embedded server,
# publish contending traffic with bad input, and show what came out. A bash script,
# not inline Taskfile shell: the task runner's shell has no job control (no kill, and
# $! is not a process id), so it could not stop serve at the end.
#
# Usage: deploy/demo.sh BIN [ORDERS] [RATE]
set -euo pipefail
bin=$1
orders=${2:-2000}
rate=${3:-20000}
dir=$(mktemp -d)
"$bin" serve --data-dir "$dir/data" --nats-listen 127.0.0.1:4222 --http-listen 127.0.0.1:8080 > "$dir/serve.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:8080/readyz >/dev/null && break; sleep 0.1; done
curl -sf http://127.0.0.1:8080/readyz >/dev/null || { cat "$dir/serve.log"; exit 1; }
echo "== orderflow serve is up (NATS nats://127.0.0.1:4222, HTTP http://127.0.0.1:8080)"
"$bin" simulate --orders "$orders" --rate "$rate" --invalid 0.002 --report
id=s1-0042
echo; echo "== GET /v1/orders/$id"; curl -s "http://127.0.0.1:8080/v1/orders/$id"; echo
echo; echo "== orderflow status $id --timeline"; "$bin" status "$id" --timeline
