#!/usr/bin/env bash
# Runs inside the throwaway system deb_test.sh makes (a chroot on an overlay over /, as root, in
# a private pid namespace): installs the .deb with a real dpkg -i, starts iarelayd as the
# installed unit would, and runs every command of the `sh` blocks under "## Runbooks" in the
# INSTALLED /usr/share/doc/iarelay/operations.md, in order, as root, exactly as written, so the
# doc and this test cannot drift. systemd does not run here: `systemctl start|stop|reload
# iarelayd` are stood in for by functions that do what the unit says (ExecStart as User=iarelay
# with UMask=0077, SIGTERM, ExecReload), and `sudo` runs its command (we are root already).
# What the runbooks leave to the operator's hands is done here where the doc says it:
#   - "Remove its [agent.X] section" in a comment: the section is removed from the file;
#   - the placeholder id `01JD...`: the id of a webhook that failed;
#   - the package to upgrade to, iarelay_VERSION_amd64.deb: this same .deb.
# After every command: nothing under /var/lib/iarelay belongs to anyone but iarelay.
set -euo pipefail
stage=$1
cd "$stage"
conf=/etc/iarelay/iarelay.conf
state=/var/lib/iarelay
doc=/usr/share/doc/iarelay/operations.md
exec 5>&1  # the test's output, also from inside a runbook command whose output is captured
fail() {
  {
    [[ -s $stage/command.out ]] && sed 's/^/    /' "$stage/command.out"
    echo "FAIL: $*"
    echo "--- daemon log (last 30 lines)"
    tail -n 30 "$stage/daemon.log" 2>/dev/null || true
  } >&5
  exit 1
}

dpkg -i "$stage"/iarelay_*.deb >"$stage/dpkg.log" 2>&1 || { cat "$stage/dpkg.log"; fail "dpkg -i"; }
getent passwd iarelay >/dev/null || fail "the postinst did not create the iarelay account"
unit=/usr/lib/systemd/system/iarelayd.service
[[ -f $unit ]] || unit=/lib/systemd/system/iarelayd.service
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
exec_reload=$(sed -n 's/^ExecReload=//p' "$unit")
umask_unit=$(sed -n 's/^UMask=//p' "$unit")
echo "installed: $(iarelayd --version); ExecStart=$exec_start"
[[ $exec_start == *"--config $conf"* ]] || fail "ExecStart does not read $conf"
[[ $exec_start != *--journal* ]] || fail "ExecStart passes the journal: iarelay --config would not find it"
grep -q "^journal = $state/journal.db$" "$conf" || fail "$conf does not name the journal"

# What systemd does before ExecStart: StateDirectory=iarelay with StateDirectoryMode=0700.
install -d -m 0700 -o iarelay -g iarelay "$state"

# N distinct free loopback ports (held together while picked, so never one twice).
free_ports() { python3 -c 'import socket,sys; s=[socket.socket() for _ in range(int(sys.argv[1]))]; [x.bind(("127.0.0.1",0)) for x in s]; print(" ".join(str(x.getsockname()[1]) for x in s))' "$1"; }
wait_for() {  # wait_for SECONDS COMMAND...: true once COMMAND succeeds
  local until=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < until)) || return 1
    sleep 0.1
  done
}
read -r listen good bad < <(free_ports 3)
# The packaged file, with its listener on a free port and the two agents of docs/deployment.md,
# their callbacks on stand-in sinks: nnmi1 answers 204, nnmi2 400 (fails a webhook at once).
sed -i "s/^address = 127.0.0.1:8080$/address = 127.0.0.1:$listen/" "$conf"
grep -q "^address = 127.0.0.1:$listen$" "$conf" || fail "no [listen] address in $conf"
cat >>"$conf" <<EOF

[agent.nnmi1]
id = ws-198/10.2.0.121:8081
callback = http://127.0.0.1:$good/apia_callback
services = hpnnmi

[agent.nnmi2]
id = ws-199/10.2.0.122:8081
callback = http://127.0.0.1:$bad/apia_callback
services = hpnnmi
EOF
iarelay-sink --listen "127.0.0.1:$good" --record "$stage/delivered.jsonl" >/dev/null 2>&1 &
iarelay-sink --listen "127.0.0.1:$bad" --fail-rate 1 --fail-status 400 >/dev/null 2>&1 &
wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$good" || fail "sink on $good"
wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$bad" || fail "sink on $bad"

daemon_pid=
start_daemon() {
  # The unit's User=, Group=, UMask= and ExecStart= (no shell in between, as systemd).
  (umask "$umask_unit" && exec setpriv --reuid=iarelay --regid=iarelay --init-groups \
    $exec_start) >>"$stage/daemon.log" 2>&1 &
  daemon_pid=$!
  wait_for 15 curl -fsS "http://127.0.0.1:$listen/readyz" || fail "iarelayd not ready"
}
stop_daemon() {
  kill -TERM "$daemon_pid"
  wait "$daemon_pid" || fail "iarelayd exited with $? on SIGTERM"
}
systemctl() {
  [[ $# -eq 2 && $2 == iarelayd ]] || fail "systemctl $*: only start|stop|reload iarelayd here"
  case $1 in
    start) start_daemon ;;
    stop) stop_daemon ;;
    reload)
      local before
      before=$(grep -c ' reloaded ' "$stage/daemon.log" || true)
      MAINPID=$daemon_pid
      eval "$exec_reload"
      reloaded_since() { [[ $(grep -c ' reloaded ' "$stage/daemon.log") -gt $1 ]]; }
      wait_for 10 reloaded_since "$before" || fail "no 'reloaded' in the log after $exec_reload"
      ;;
    *) fail "systemctl $1: not stood in for" ;;
  esac
}
sudo() { "$@"; }

events=7000000
post() {  # post [QUERY]: one webhook for service hpnnmi, a new alert each time
  events=$((events + 1))
  local code
  code=$(sed "s/6120448/$events/" ib_status.json |
    curl -sS -o "$stage/post.out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
      --data-binary @- "http://127.0.0.1:$listen/v1/webhooks/hpnnmi${1:-}")
  [[ $code == 202 ]] || fail "POST answered $code: $(cat "$stage/post.out")"
}
journal_query() { runuser -u iarelay -- sqlite3 -readonly "$state/journal.db" "$1"; }
delivered() { [[ -f $stage/delivered.jsonl ]] && wc -l <"$stage/delivered.jsonl" || echo 0; }
has_delivered() { [[ $(delivered) -ge $1 ]]; }
wait_delivered() {  # wait_delivered N: the sink has N deliveries
  wait_for 15 has_delivered "$1" || fail "the sink has $(delivered) deliveries, expected $1"
}
owned_by_service() {
  local other
  other=$(find "$state" ! -user iarelay -printf '%p (%u)\n')
  [[ -z $other ]] || fail "after '$1': not owned by iarelay: $other"
}

# An operator who creates the journal by hand before the first start, as root: it must be the
# service's (a root-owned journal would keep iarelayd from starting).
iarelay --config "$conf" migrate >"$stage/command.out" 2>&1 || fail "iarelay migrate as root before the first start"
: >"$stage/command.out"
owned_by_service "iarelay migrate before the first start"
start_daemon
# Before the runbooks: one delivery through nnmi1, two webhooks nnmi2 refuses (failed).
post '?agent=ws-198/10.2.0.121:8081'
post '?agent=ws-199/10.2.0.122:8081'
post '?agent=ws-199/10.2.0.122:8081'
wait_delivered 1
two_failed() { [[ $(journal_query "SELECT count(*) FROM webhooks WHERE state='failed'") == 2 ]]; }
wait_for 15 two_failed || fail "expected 2 failed webhooks"
owned_by_service "the first webhooks"

# The runbooks' commands, section by section, from the installed doc.
awk '/^## Runbooks/ { on = 1; next }
     on && /^## / { on = 0 }
     on && /^### / { print "#SECTION " substr($0, 5); next }
     on && /^```sh/ { code = 1; next }
     on && code && /^```/ { code = 0; next }
     on && code { print }' "$doc" >"$stage/runbooks.txt"
commands=$(grep -cv '^#\|^$' "$stage/runbooks.txt" || true)
[[ $commands -ge 10 ]] || fail "only $commands runbook commands found in $doc"
section=
id=
paused=0
ran=0
while IFS= read -r line <&4; do
  if [[ $line == "#SECTION "* ]]; then
    section=${line#\#SECTION }
    echo "== $section"
    continue
  fi
  if [[ $line =~ Remove\ its\ \[agent\.([A-Za-z0-9_-]+)\]\ section ]]; then
    handle=${BASH_REMATCH[1]}
    python3 - "$conf" "$handle" <<'EOF'
import re, sys
path, handle = sys.argv[1], sys.argv[2]
text = open(path).read()
cut = re.sub(r"\n\[agent\." + re.escape(handle) + r"\]\n(?:[^\[].*\n?)*", "\n", text)
assert cut != text, "no [agent.%s] section" % handle
open(path, "w").write(cut)
EOF
    echo "   (removed [agent.$handle] from $conf)"
  fi
  [[ -z $line || $line == \#* ]] && continue
  command=$line
  if [[ $command == *"01JD..."* ]]; then
    id=$(journal_query "SELECT id FROM webhooks WHERE state='failed' ORDER BY seq LIMIT 1")
    [[ -n $id ]] || fail "no failed webhook to stand for 01JD..."
    command=${command//01JD.../$id}
  fi
  # The package to upgrade to: this one again (its conffile must keep the agents added above).
  command=${command//iarelay_VERSION_amd64.deb/$(ls "$stage"/iarelay_*.deb)}
  [[ $command != *VERSION* ]] || fail "placeholder this test does not know in: $line"
  [[ $command != *...* ]] || fail "placeholder this test does not know in: $line"
  echo "\$ $command"
  before=$(delivered)
  if ! eval "$command" </dev/null >"$stage/command.out" 2>&1; then
    fail "runbook \"$section\": '$command' failed"
  fi
  sed 's/^/    /' "$stage/command.out"
  : >"$stage/command.out"
  ran=$((ran + 1))
  owned_by_service "$command"
  # What the runbook says the command does, where the test can see it.
  case $command in
    *" agent pause "*)
      # The daemon reads pauses within a second: wait for it, as the operator reads status.
      paused_since() { [[ $(grep -c ' paused by operator' "$stage/daemon.log") -gt $1 ]]; }
      wait_for 5 paused_since "$paused" || fail "the daemon did not take the pause within 5 s"
      paused=$((paused + 1))
      ;;
  esac
  case $command in
    *"agent pause nnmi1 "*)
      post '?agent=ws-198/10.2.0.121:8081'
      sleep 1.5
      [[ $(delivered) -eq $before ]] || fail "a webhook for paused nnmi1 was delivered"
      ;;
    *"agent resume nnmi1"*) wait_delivered $((before + 1)) ;;
    *"agent pause nnmi2 "*) post '?agent=ws-199/10.2.0.122:8081' ;;
    *"move --from 'ws-199/10.2.0.122:8081' --to nnmi1") wait_delivered $((before + 1)) ;;
    *"resend $id --to-agent ws-198/10.2.0.121:8081") wait_delivered $((before + 1)) ;;
  esac
done 4<"$stage/runbooks.txt"
echo "ran $ran runbook commands as root"

grep -q '^\[agent.nnmi1\]$' "$conf" || fail "the agents added to $conf are gone (upgrade?)"
# The service still owns its journal and works: a new webhook is delivered.
kill -0 "$daemon_pid" 2>/dev/null || fail "iarelayd is not running after the runbooks"
before=$(delivered)
post
wait_delivered $((before + 1))
owned_by_service "the last webhook"
stop_daemon
owned_by_service "the stop"
echo "ok: the runbooks work as written on the installed package"
