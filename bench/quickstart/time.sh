#!/usr/bin/env bash
# Times the README's "Quick start: an agent, end to end" as a new user would run it: a fresh clone
# of REV, an empty private build cache (GOCACHE; the module cache is left as it is: say whether it
# was populated), TYPE seconds (default 10) of typing before each numbered step, the kernel on the
# README's default address 127.0.0.1:8080 (which must be free), both example agents. Each step
# waits as a user would: for /health after `make run`, for the first successful invocation after
# starting the agents. Prints and writes OUT/times.txt: seconds since the start, per step.
#
#   bench/quickstart/time.sh REPO REV OUT [AGENT_CMD]
#
# AGENT_CMD is the Go agent's command of step 3 (default: bin/echo-agent, as in the README;
# before commit 0c24a3d it was `go run ./examples/echo-agent`). Results: docs/benchmarks.md.
set -euo pipefail
REPO=$1 REV=$2 OUT=$3 AGENT_CMD=${4:-bin/echo-agent} TYPE=${TYPE:-10}
mkdir -p "$OUT"; : > "$OUT/times.txt"
T0=$(date +%s.%N)
log() { printf '%7.1f %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*" | tee -a "$OUT/times.txt"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
GOCACHE=$(mktemp -d); export GOCACHE
CLONE=$(mktemp -d)
log "start, load $(load)"
git clone -q "$REPO" "$CLONE" && cd "$CLONE" && git checkout -q "$REV"
log "cloned $(git rev-parse --short HEAD)"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -INT -- "-$p" 2>/dev/null || true; done
	sleep 3
	rm -rf "$CLONE" "$GOCACHE"
}
trap cleanup EXIT

sleep "$TYPE" # 1. Terminal 1
export NOPS_BOOTSTRAP_ADMIN_PASSWORD='choose-a-long-password'
setsid make run > "$OUT/kernel.log" 2>&1 &
pids+=($!)
log "1. make run"
until curl -sf -o /dev/null localhost:8080/health; do
	kill -0 "${pids[0]}" 2>/dev/null || { log "the kernel exited: $OUT/kernel.log"; exit 1; }
	sleep 0.5
done
log "1. kernel healthy, load $(load)"

sleep "$TYPE" # 2. Terminal 2
NOPS_TOKEN=$(bin/nops login --username admin --password-stdin <<<"$NOPS_BOOTSTRAP_ADMIN_PASSWORD")
export NOPS_TOKEN
bin/nops tenants create acme > "$OUT/step2.txt"
NOPS_API_KEY=$(bin/nops keys create --tenant acme --name agent --role ADMIN -o json 2>/dev/null \
	| grep -o '"secret": *"[^"]*"' | cut -d'"' -f4)
export NOPS_API_KEY
log "2. tenant and key"

sleep "$TYPE" # 3. agents
NOPS_URL=http://127.0.0.1:8080 setsid $AGENT_CMD > "$OUT/echo-agent.log" 2>&1 &
pids+=($!)
NOPS_URL=http://127.0.0.1:8080 setsid python3 examples/python-agent/agent.py > "$OUT/python-agent.log" 2>&1 &
pids+=($!)
log "3. agents started"

sleep "$TYPE" # 4. invoke, once each agent has registered
invoke() {
	until curl -sf "localhost:8080/v1/invoke/$1" -H "X-API-Key: $NOPS_API_KEY" \
		-H 'Content-Type: application/json' -d "$2" > "$OUT/invoke-$1.json"; do sleep 0.5; done
	log "4. $1 answered: $(head -c 120 "$OUT/invoke-$1.json")"
}
invoke echo '{"message":"hello"}'
invoke text.reverse '{"text":"hello"}'

sleep "$TYPE" # 5.
{ bin/nops agents list --tenant acme; bin/nops events stats; bin/nops audit list --tenant acme; } > "$OUT/step5.txt"
log "5. agents, events, audit listed, load $(load)"
