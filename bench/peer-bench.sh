#!/bin/bash
# Peer benchmark, plain VNC mode: the same client (bench/ringside-bench) and
# the same fake upstream (bench/fake-rfb) against ringside and against
# websockify (Debian), one after the other on this machine: consoles held,
# memory per idle console (PSS of the whole process tree, growth ÷ held),
# open rate, and CPU per console opened.
#
#   bench/peer-bench.sh [CONSOLES]        (default 500; websockify forks a process per console)
#
# Loopback only; every process is stopped by its PID. Writes
# bench/results/peers-<UTC stamp>.md and .json.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500}
B=${RINGSIDE_BUILD:-build/release}
OUT=${BENCH_OUT:-bench/results}
command -v websockify >/dev/null || { echo "peer-bench: websockify is not installed (scripts/setup)" >&2; exit 1; }
run=$(mktemp -d /tmp/rs-peer-bench.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$run"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tree() { # pid and every descendant
	local p=$1
	echo "$p"
	for c in $(pgrep -P "$p" || true); do tree "$c"; done
}
pss_kb() { # PSS summed over a process tree
	local t=0 p
	for p in $(tree "$1"); do
		t=$((t + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)))
	done
	echo "$t"
}
ticks() { # utime+stime (and reaped children) of a process tree
	local t=0 p
	for p in $(tree "$1"); do
		t=$((t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}

fport=$(free_port)
"$B/bench/fake-rfb" --listen "127.0.0.1:$fport" --mode idle >/dev/null 2>&1 &
pids+=($!)

measure() { # name pid bench-args...
	local name=$1 pid=$2 before after t0 t1 hp
	shift 2
	sleep 1
	# Warm-up: receive buffers and allocator caches are a fixed cost, not a per-console one.
	"$B/bench/ringside-bench" "$@" --conns 200 --batch 32 --hold-seconds 0 >/dev/null 2>&1 || true
	sleep 2
	before=$(pss_kb "$pid")
	t0=$(ticks "$pid")
	"$B/bench/ringside-bench" "$@" --conns "$N" --batch 32 --hold-seconds 600 \
		--timeout-ms 60000 >"$run/$name.json" 2>"$run/$name.err" &
	hp=$!
	pids+=("$hp")
	for _ in $(seq 3000); do
		grep -q '"event":"held"' "$run/$name.err" 2>/dev/null && break
		sleep 0.1
	done
	t1=$(ticks "$pid")
	sleep 2
	after=$(pss_kb "$pid")
	kill "$hp"
	wait "$hp" 2>/dev/null || true
	echo "$name $before $after $t0 $t1 $(grep -o '"opened":[0-9]*' "$run/$name.err" | head -1 | cut -d: -f2) $(grep -o '"ramp_ms":[0-9]*' "$run/$name.err" | head -1 | cut -d: -f2)" >>"$run/vals"
}

aport=$(free_port)
cat >"$run/ringside.json" <<JSON
{"listen": ["127.0.0.1:$aport"], "workers": 2, "state_dir": "$run", "metrics_listen": "",
 "log_level": "warn", "api_keys": [{"name": "bench", "key": "bench-key-0123456789abcdef"}],
 "api": {"rate_limit_per_s": 0},
 "limits": {"header_timeout_ms": 600000, "keepalive_timeout_ms": 3600000}}
JSON
"$B/ringside" --config "$run/ringside.json" 2>"$run/ringside.log" &
rs=$!
pids+=("$rs")
measure ringside "$rs" --api "127.0.0.1:$aport" --key bench-key-0123456789abcdef \
	--target "127.0.0.1:$fport"
kill "$rs"

wport=$(free_port)
websockify "127.0.0.1:$wport" "127.0.0.1:$fport" >"$run/websockify.log" 2>&1 &
ws=$!
pids+=("$ws")
measure websockify "$ws" --path / --ws "127.0.0.1:$wport"

mkdir -p "$OUT"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
python3 - "$run/vals" "$OUT/peers-$stamp" "$N" "$(getconf CLK_TCK)" <<'PY'
import json, sys
vals, base, n, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
r = {}
for line in open(vals):
    name, b, a, t0, t1, held, ramp = (line.split() + ["0", "0"])[:7]
    held = int(held or 0)
    r[name] = {"held": held, "ramp_ms": int(ramp or 0),
               "pss_bytes_per_console": round((int(a) - int(b)) * 1024 / max(held, 1)),
               "cpu_ms_per_console_opened": round((int(t1) - int(t0)) * 1000 / hz / max(held, 1), 3),
               "opened_per_s": round(held * 1000 / int(ramp)) if int(ramp or 0) else None}
rs, ws = r.get("ringside", {}), r.get("websockify", {})
ratio = lambda a, b: round(a / b, 3) if a and b else None
out = {"consoles": n, "ringside": rs, "websockify": ws}
json.dump(out, open(base + ".json", "w"), indent=1)
md = ["# Peers, plain VNC mode: %d consoles through each relay, held idle" % n, "",
      "| figure | ringside | websockify 0.10 | ratio |", "|---|---|---|---|",
      "| consoles held | %s | %s | |" % (rs.get("held"), ws.get("held")),
      "| memory per idle console (PSS of the process tree, growth ÷ held) | %s B | %s B | %s |" % (
          rs.get("pss_bytes_per_console"), ws.get("pss_bytes_per_console"),
          ratio(rs.get("pss_bytes_per_console"), ws.get("pss_bytes_per_console"))),
      "| relay CPU per console opened | %s ms | %s ms | %s |" % (
          rs.get("cpu_ms_per_console_opened"), ws.get("cpu_ms_per_console_opened"),
          ratio(rs.get("cpu_ms_per_console_opened"), ws.get("cpu_ms_per_console_opened"))),
      "| consoles opened per second (32 in flight) | %s | %s | |" % (rs.get("opened_per_s"), ws.get("opened_per_s")),
      "", "ringside's figures include its API (a token per console); websockify has none.",
      "Reproduce: `bench/peer-bench.sh %d` (same client, same fake upstream, one after the other)." % n]
open(base + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
