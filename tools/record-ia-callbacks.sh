#!/usr/bin/env bash
# Records the relay's real apia_callback requests for the Integration Agent shim's tests
# (tests/ia_shim/): a real iarelayd with one `format = ia`, signed agent delivers every payload of
# tests/fixtures/xmatters/ and tests/fixtures/ia-callbacks/extra/ to iarelay-sink --record, and
# each recorded request is written to tests/fixtures/ia-callbacks/<name>.json.
# Usage: tools/record-ia-callbacks.sh [BIN_DIR]   (default build/bin; loopback only)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/bin}
out=tests/fixtures/ia-callbacks
for b in iarelayd iarelay-sink; do
  [[ -x $bin/$b ]] || { echo "record-ia-callbacks: $bin/$b missing: build it first (cmake --build build --target $b)" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# N distinct free loopback ports (held together while picked, so never one twice).
free_ports() { python3 -c 'import socket,sys; s=[socket.socket() for _ in range(int(sys.argv[1]))]; [x.bind(("127.0.0.1",0)) for x in s]; print(" ".join(str(x.getsockname()[1]) for x in s))' "$1"; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

read -r relay_port agent_port < <(free_ports 2)
cat >"$work/relay.conf" <<CONF
journal = $work/journal.db
[listen]
address = 127.0.0.1:$relay_port
[agent.ia1]
id = ws-ia1/127.0.0.1:$agent_port
callback = http://127.0.0.1:$agent_port/http/applications_hpnnmi
services = hpnnmi
format = ia
secret_file = $PWD/$out/secret
CONF

"$bin/iarelay-sink" --listen "127.0.0.1:$agent_port" --secret-file "$out/secret" \
  --record "$work/sink.jsonl" >"$work/sink.out" 2>"$work/sink.log" & pids+=($!)
"$bin/iarelayd" --config "$work/relay.conf" 2>"$work/relay.log" & pids+=($!)
wait_port "$agent_port"
wait_port "$relay_port"

# One webhook at a time, each delivered before the next is sent: the order of the recordings
# is the order of the inputs, and each intake answer names the webhook id it got.
inputs=(tests/fixtures/xmatters/*.json "$out"/extra/*.json)
: >"$work/index.tsv"
n=0
for f in "${inputs[@]}"; do
  answer=$(curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' \
    --data-binary "@$f" "http://127.0.0.1:$relay_port/v1/webhooks/hpnnmi")
  id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$answer")
  printf '%s\t%s\n' "$f" "$id" >>"$work/index.tsv"
  n=$((n + 1))
  for _ in $(seq 200); do
    [[ -f $work/sink.jsonl ]] && (($(wc -l <"$work/sink.jsonl") >= n)) && break
    sleep 0.05
  done
  (($(wc -l <"$work/sink.jsonl") >= n)) || { echo "record-ia-callbacks: $f was not delivered; see $work/relay.log" >&2; cat "$work/relay.log" >&2; exit 1; }
done

python3 - "$work/index.tsv" "$work/sink.jsonl" "$out" <<'PY'
import json, os, sys
index, sink, out = sys.argv[1:]
records = {}
with open(sink) as f:
    for line in f:
        r = json.loads(line)
        records[r["webhook_id"]] = r
with open(index) as f:
    for line in f:
        path, wid = line.rstrip("\n").split("\t")
        r = records[wid]
        if r["signature"] != "valid":
            sys.exit(f"record-ia-callbacks: {path}: the sink found the signature {r['signature']}")
        name = os.path.splitext(os.path.basename(path))[0]
        doc = {"input": os.path.relpath(path, "tests/fixtures"), "recorded": r}
        with open(os.path.join(out, name + ".json"), "w") as o:
            json.dump(doc, o, indent=2, ensure_ascii=False)
            o.write("\n")
        print(f"{name}.json  {r['type']:<15} webhook {wid}")
PY
