#!/usr/bin/env bash
# The demo: a relay, two stand-in Integration Agents and a stand-in xMatters sending a few
# thousand webhooks of every type. Mid-way one agent is paused for maintenance and the relay is
# SIGKILLed and restarted; then the agent is resumed, and the journal proves every webhook that
# was acknowledged reached an agent and none was lost.
# Usage: tools/demo.sh [COUNT]   (sets everything up first; IARELAY_BIN=dir skips the setup)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-2500}   # per sender; two senders at 300 webhooks/s each

if [[ -z ${IARELAY_BIN:-} ]]; then
  tools/setup.sh >/dev/null
  IARELAY_BIN=$PWD/build/bin
fi
bin=$IARELAY_BIN
demo=${IARELAY_DEMO_DIR:-$PWD/var/demo}
rm -rf "$demo"
mkdir -p "$demo"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# N distinct free loopback ports (held together while picked, so never one twice).
free_ports() { python3 -c 'import socket,sys; s=[socket.socket() for _ in range(int(sys.argv[1]))]; [x.bind(("127.0.0.1",0)) for x in s]; print(" ".join(str(x.getsockname()[1]) for x in s))' "$1"; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened"; return 1; }
iarelay() { "$bin/iarelay" --config "$demo/relay.conf" "$@"; }

read -r relay_port agent1_port agent2_port < <(free_ports 3)
agent1="ws-101/127.0.0.1:$agent1_port"
agent2="ws-102/127.0.0.1:$agent2_port"
cat >"$demo/relay.conf" <<CONF
journal = $demo/journal.db
sync = full
[listen]
address = 127.0.0.1:$relay_port
[agent.nnmi1]
id = $agent1
callback = http://127.0.0.1:$agent1_port/apia_callback
services = hpnnmi
[agent.nnmi2]
id = $agent2
callback = http://127.0.0.1:$agent2_port/apia_callback
services = hpnnmi
CONF

say "Two stand-in Integration Agents (iarelay-sink) and the relay (iarelayd)"
"$bin/iarelay-sink" --listen "127.0.0.1:$agent1_port" --record "$demo/agent1.jsonl" 2>"$demo/agent1.log" & pids+=($!)
"$bin/iarelay-sink" --listen "127.0.0.1:$agent2_port" --record "$demo/agent2.jsonl" 2>"$demo/agent2.log" & pids+=($!)
start_relay() { "$bin/iarelayd" --config "$demo/relay.conf" 2>>"$demo/relay.log" & relay_pid=$!; pids+=($relay_pid); wait_port "$relay_port"; }
start_relay
wait_port "$agent1_port"; wait_port "$agent2_port"
echo "relay on 127.0.0.1:$relay_port; agents $agent1 and $agent2 (service hpnnmi)"

say "xMatters stand-ins send $((2 * count)) webhooks: status, deliveryStatus, response, annotation"
echo "sender A names agent nnmi1 ($agent1); sender B names no agent (first available agent)"
"$bin/iarelay-loadgen" --url "http://127.0.0.1:$relay_port" --service 'applications|hpnnmi' \
  --agent "$agent1" --count "$count" --rate 300 --concurrency 8 --dialect ib \
  --record "$demo/sent-a.jsonl" >"$demo/sender-a.out" 2>"$demo/sender-a.log" & sender_a=$!
"$bin/iarelay-loadgen" --url "http://127.0.0.1:$relay_port" --service hpnnmi \
  --count "$count" --rate 300 --concurrency 8 --dialect ia \
  --record "$demo/sent-b.jsonl" >"$demo/sender-b.out" 2>"$demo/sender-b.log" & sender_b=$!
pids+=($sender_a $sender_b)

sleep 1.5
say "Maintenance window: pause nnmi1 (its queue keeps filling; nothing is attempted)"
iarelay agent pause nnmi1 --reason "maintenance window"
sleep 1
say "The relay is killed with SIGKILL mid-stream and restarted"
kill -9 "$relay_pid"; wait "$relay_pid" 2>/dev/null || true
echo "killed iarelayd pid $relay_pid; senders retry until the relay answers again"
sleep 0.5
start_relay
echo "restarted as pid $relay_pid"
wait "$sender_a" "$sender_b"
summary() { awk -F': ' '/^(sent|accepted|retried|failed|latency_p99_ms)$/ {next} /^(sent|accepted|retried|failed|latency_p99_ms):/ {printf "%s %s  ", $1, $2}' "$1"; echo; }
echo "sender A: $(summary "$demo/sender-a.out")"
echo "sender B: $(summary "$demo/sender-b.out")"

say "While nnmi1 is paused"
iarelay status
say "Maintenance over: resume nnmi1; its queue drains in order"
iarelay agent resume nnmi1
for _ in $(seq 600); do
  left=$(iarelay sql "SELECT count(*) FROM webhooks WHERE state IN ('queued','inflight')" --format csv | tail -n 1 | tr -d '\r')
  [[ $left == 0 ]] && break
  sleep 0.1
done
iarelay status

say "The journal, by SQL"
iarelay sql "SELECT assigned_agent AS agent, state, count(*) AS webhooks FROM webhooks GROUP BY 1, 2 ORDER BY 1, 2"
iarelay sql "SELECT action, filter, affected FROM audit ORDER BY id"

say "Proof: every acknowledged webhook reached an agent"
"$bin/iarelay" --journal "$demo/journal.db" sql "SELECT id, state FROM webhooks" --format csv >"$demo/journal.csv"
python3 - "$demo" <<'PY'
import csv, json, sys
demo = sys.argv[1]
def lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]
accepted = {r["id"] for name in ("sent-a", "sent-b") for r in lines(f"{demo}/{name}.jsonl")}
with open(f"{demo}/journal.csv") as f:
    states = {row["id"]: row["state"] for row in csv.DictReader(f)}
deliveries = [r for name in ("agent1", "agent2") for r in lines(f"{demo}/{name}.jsonl")
              if 200 <= int(r.get("status", 204)) < 300]
seen = [r["webhook_id"] for r in deliveries]
unique = set(seen)
not_in_journal = accepted - states.keys()
undelivered = {i for i in accepted if states.get(i) != "delivered"}
never_reached = accepted - unique
print(f"accepted by the relay (202): {len(accepted)}")
print(f"in the journal:              {len(states)}")
print(f"delivered (journal):         {sum(1 for s in states.values() if s == 'delivered')}")
print(f"received by the agents:      {len(unique)} unique, {len(seen) - len(unique)} repeated "
      "(at-least-once: calls in flight at the kill are made again with the same webhook-id)")
lost = len(not_in_journal | undelivered | never_reached)
print(f"demo: {len(accepted)} accepted, {len(accepted) - lost} delivered, lost {lost}")
sys.exit(1 if lost or not accepted else 0)
PY
