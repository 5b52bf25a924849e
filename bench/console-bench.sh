#!/bin/bash
# Console benchmark: N consoles opened the way a browser opens them (API
# token, WSS upgrade, RFB handshake through the relay) and held idle —
# ringside's userspace and kernel memory per console, its CPU while they
# idle — then the API token rate over keep-alive connections.
#
#   bench/console-bench.sh [CONSOLES] [TOKENS]        (defaults 20000 50000)
#
# Parts: build/release/ringside (2 workers, TLS listener, plain VNC kind),
# bench/fake-rfb (the upstream, io_uring, never the bottleneck), and
# bench/ringside-bench (the browsers, io_uring direct descriptors: one
# process passes the 20,000-descriptor limit). Loopback only; every process
# is stopped by its PID. Writes bench/results/console-<UTC stamp>.md/.json.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000} TOKENS=${2:-50000}
B=${RINGSIDE_BUILD:-build/release}
OUT=${BENCH_OUT:-bench/results}
for bin in "$B/ringside" "$B/bench/fake-rfb" "$B/bench/ringside-bench"; do
	[ -x "$bin" ] || { echo "console-bench: $bin missing: run make" >&2; exit 1; }
done
run=$(mktemp -d /tmp/rs-console-bench.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$run"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { # utime+stime of every thread
	awk '{print $14 + $15}' "/proc/$1/stat"
}
mem() { # Private_Dirty Pss (kB)
	awk '/^Private_Dirty/ {d=$2} /^Pss:/ {p=$2} END {print d, p}' "/proc/$1/smaps_rollup"
}
slab_kb() { # kernel slab in use (kB)
	awk '/^Slab:/ {print $2}' /proc/meminfo
}

fport=$(free_port) aport=$(free_port) tport=$(free_port)
# A ring's direct-descriptor table is capped by RLIMIT_NOFILE (~19,700 here),
# per ring: a console is two sockets in ringside and one in each of the
# client and the upstream, so each gets enough workers (rings) for N.
PER_RING=19000
w_rs=$(( (2 * N + PER_RING - 1) / PER_RING )); [ "$w_rs" -lt 2 ] && w_rs=2
w_one=$(( (N + 500 + PER_RING - 1) / PER_RING ))
# Upstream connections spread over 8 source addresses (the port pool), so
# more than one ephemeral range's worth can reach the one fake upstream.
cat >"$run/ringside.json" <<JSON
{"listen": ["127.0.0.1:$aport"], "tls_listen": ["127.0.0.1:$tport"], "workers": $w_rs,
 "state_dir": "$run", "metrics_listen": "", "log_level": "warn",
 "api_keys": [{"name": "bench", "key": "bench-key-0123456789abcdef"}],
 "api": {"rate_limit_per_s": 0},
 "tokens": {"capacity": $((N + TOKENS + 1000)), "ttl_s": 600},
 "limits": {"header_timeout_ms": 600000, "keepalive_timeout_ms": 3600000,
            "handshake_timeout_ms": 120000},
 "port_pool": {"source_addresses": ["127.0.0.101", "127.0.0.102", "127.0.0.103", "127.0.0.104",
                                    "127.0.0.105", "127.0.0.106", "127.0.0.107", "127.0.0.108"],
               "port_min": 10000, "port_max": 32767}}
JSON
"$B/bench/fake-rfb" --listen "127.0.0.1:$fport" --mode idle --workers "$w_one" >"$run/fake.json" 2>"$run/fake.err" &
fake=$!
pids+=("$fake")
"$B/ringside" --config "$run/ringside.json" 2>"$run/ringside.log" &
rs=$!
pids+=("$rs")
for _ in $(seq 100); do
	curl -fs "http://127.0.0.1:$aport/healthz" >/dev/null 2>&1 && break
	sleep 0.1
done
BENCH=("$B/bench/ringside-bench" --api "127.0.0.1:$aport" --ws "127.0.0.1:$tport" --tls
	--key bench-key-0123456789abcdef --target "127.0.0.1:$fport")
# Warm-up: the receive pools and allocator caches are a fixed cost.
"${BENCH[@]}" --conns 500 --hold-seconds 0 >/dev/null 2>&1 || true
sleep 2
read -r d0 p0 <<<"$(mem "$rs")"
s0=$(slab_kb)
"${BENCH[@]}" --conns "$N" --hold-seconds 600 --batch 512 --src-base 2 --src-count 16 \
	--workers "$w_one" \
	--timeout-ms 120000 >"$run/hold.json" 2>"$run/hold.err" &
hp=$!
pids+=("$hp")
for _ in $(seq 6000); do
	grep -q '"event":"held"' "$run/hold.err" 2>/dev/null && break
	kill -0 "$hp" 2>/dev/null || break
	sleep 0.1
done
sleep 3
read -r d1 p1 <<<"$(mem "$rs")"
s1=$(slab_kb)
held=$(grep -o '"opened":[0-9]*' "$run/hold.err" | head -1 | cut -d: -f2)
ramp=$(grep -o '"ramp_ms":[0-9]*' "$run/hold.err" | head -1 | cut -d: -f2)
t0=$(ticks "$rs")
sleep 10
t1=$(ticks "$rs")
kill "$hp"
wait "$hp" 2>/dev/null || true
# The token rate is measured on a quiet ringside: wait until every held
# console has been torn down (up to a minute).
for _ in $(seq 600); do
	active=$(curl -fs -H 'Authorization: Bearer bench-key-0123456789abcdef' \
		"http://127.0.0.1:$aport/api/v1/stats" |
		python3 -c 'import json,sys;print(json.load(sys.stdin)["consoles"]["active"])' 2>/dev/null || echo 1)
	[ "$active" = 0 ] && break
	sleep 0.1
done
sleep 1
tj=$("$B/bench/ringside-bench" --scenario tokens --api "127.0.0.1:$aport" \
	--key bench-key-0123456789abcdef --target "127.0.0.1:$fport" --conns "$TOKENS" --batch 128 \
	--workers 1 2>/dev/null || true)
mkdir -p "$OUT"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
python3 - "$OUT/console-$stamp" "$N" "${held:-0}" "${ramp:-0}" "$d0" "$d1" "$p0" "$p1" "$s0" "$s1" \
	"$t0" "$t1" "$(getconf CLK_TCK)" "$tj" "$(cat "$run/hold.json")" <<'PY'
import json, sys
base, n, held, ramp, d0, d1, p0, p1, s0, s1, t0, t1, hz, tj, hj = sys.argv[1:16]
n, held, ramp = int(n), int(held), int(ramp)
per = lambda a, b: round((int(b) - int(a)) * 1024 / max(held, 1))
tok = json.loads(tj) if tj.strip() else {}
hold = json.loads(hj) if hj.strip() else {}
r = {"consoles": n, "held": held, "ramp_ms": ramp,
     "consoles_per_s_opened": round(held * 1000 / ramp) if ramp else None,
     "userspace_private_dirty_bytes_per_console": per(d0, d1),
     "userspace_pss_bytes_per_console": per(p0, p1),
     "kernel_slab_bytes_per_console_both_ends": per(s0, s1),
     "ringside_cpu_percent_while_idle": round((int(t1) - int(t0)) / int(hz) / 10 * 100, 2),
     "setup_us": hold.get("setup_us"), "failures": hold.get("failures"),
     "token_rate_per_s": tok.get("tokens_per_s"), "tokens": tok.get("tokens")}
json.dump(r, open(base + ".json", "w"), indent=1)
md = ["# Console benchmark: %d consoles over TLS (browser leg), held idle" % n, "",
      "| figure | ringside |", "|---|---|",
      "| consoles held (asked %d) | %d |" % (n, held),
      "| opened per second (API + TLS + WebSocket + RFB through the relay, one client process) | %s |" % r["consoles_per_s_opened"],
      "| setup latency p50 / p99 (µs, at --batch 512 in flight) | %s / %s |" % ((hold.get("setup_us") or {}).get("p50"), (hold.get("setup_us") or {}).get("p99")),
      "| userspace memory per console (Private_Dirty growth ÷ held; TLS browser leg + upstream leg) | %d B |" % r["userspace_private_dirty_bytes_per_console"],
      "| kernel slab growth per console (4 sockets: client, both ringside legs, upstream; not ringside's alone) | %d B |" % r["kernel_slab_bytes_per_console_both_ends"],
      "| ringside CPU while the consoles idle (10 s) | %s %% |" % r["ringside_cpu_percent_while_idle"],
      "| API token creation rate (keep-alive, pipelined 128) | %s /s |" % r["token_rate_per_s"],
      "", "Reproduce: `bench/console-bench.sh %d %s` (ringside with one worker per ~9,500 consoles, at least 2: a ring holds ~19,700 sockets; the client and the fake upstream share the same 2 CPUs)." % (n, tok.get("tokens", ""))]
open(base + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
