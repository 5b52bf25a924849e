#!/bin/bash
# The TLS benchmark: userspace memory per idle TLS connection, and full TLS
# handshakes per server CPU-second (ECDSA P-256 certificate, X25519), for
# ringside and for nginx with the same certificate, the same client
# (bench/hold --tls: full handshakes, no resumption) and the same pinning
# (server on CPU 0, client on CPU 1).
#
#   bench/tls-bench.sh [CONNS] [HANDSHAKES]      (defaults 10000 5000)
#
# Loopback only; every process is stopped by its PID. Writes
# bench/results/tls-<UTC stamp>.md and .json.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${1:-10000} HS=${2:-5000}
B=${RINGSIDE_BUILD:-build/release}
OUT=${BENCH_OUT:-bench/results}
for tool in nginx openssl taskset curl /usr/bin/python3; do
	command -v "$tool" >/dev/null || { echo "tls-bench: $tool is not installed" >&2; exit 1; }
done
for bin in "$B/ringside" "$B/bench/hold"; do
	[ -x "$bin" ] || { echo "tls-bench: $bin missing: run make" >&2; exit 1; }
done
run=$(mktemp -d /tmp/rs-tls-bench.XXXXXX)
chmod 755 "$run"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$run"
}
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
dirty_kb() { awk '/^Private_Dirty/ {print $2}' "/proc/$1/smaps_rollup"; }
wait_tls() {
	for _ in $(seq 200); do
		curl -fsk -o /dev/null "https://127.0.0.1:$1/healthz" && return 0
		sleep 0.05
	done
	echo "tls-bench: port $1 never answered" >&2
	return 1
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$run/key.pem" \
	-out "$run/cert.pem" -days 30 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 2>/dev/null
chmod 644 "$run/key.pem"

HOLD=(taskset -c 1 "$B/bench/hold" --tls --path /healthz)
measure() { # name port server-pid (the process whose memory and CPU count)
	local name=$1 port=$2 pid=$3 before after t0 t1 hp
	wait_tls "$port"
	"${HOLD[@]}" --port "$port" --conns 200 --hold-seconds 0 >/dev/null 2>&1 # warm-up
	sleep 1
	before=$(dirty_kb "$pid")
	"${HOLD[@]}" --port "$port" --conns "$CONNS" --src-base 2 --src-count 8 --batch 256 \
		--hold-seconds 600 >"$run/$name-hold.json" 2>"$run/$name-hold.err" &
	hp=$!
	pids+=("$hp")
	for _ in $(seq 1200); do
		grep -q '"event":"held"' "$run/$name-hold.err" 2>/dev/null && break
		sleep 0.1
	done
	sleep 2
	after=$(dirty_kb "$pid")
	held=$(grep -o '"opened":[0-9]*' "$run/$name-hold.err" | head -1 | cut -d: -f2)
	kill "$hp"
	wait "$hp" 2>/dev/null || true
	sleep 1
	t0=$(ticks "$pid")
	"${HOLD[@]}" --port "$port" --conns "$HS" --src-base 20 --src-count 8 --batch 64 \
		--hold-seconds 0 >"$run/$name-hs.json" 2>/dev/null || true
	t1=$(ticks "$pid")
	echo "$name $before $after ${held:-0} $t0 $t1 $(grep -o '"opened":[0-9]*' "$run/$name-hs.json" | cut -d: -f2) $(grep -o '"ramp_ms":[0-9]*' "$run/$name-hs.json" | cut -d: -f2)" >>"$run/vals"
}

# ringside: one worker, pinned to CPU 0.
rport=$(free_port)
cat >"$run/ringside.json" <<JSON
{"listen": [], "tls_listen": ["127.0.0.1:$rport"], "workers": 1, "log_level": "warn",
 "state_dir": "$run", "metrics_listen": "",
 "tls": {"certificates": [{"cert": "$run/cert.pem", "key": "$run/key.pem"}]},
 "limits": {"header_timeout_ms": 600000, "keepalive_timeout_ms": 3600000}}
JSON
taskset -c 0 "$B/ringside" --config "$run/ringside.json" 2>"$run/ringside.log" &
rs=$!
pids+=("$rs")
measure ringside "$rport" "$rs"
kill "$rs"; wait "$rs" 2>/dev/null || true

# nginx: one worker, pinned to CPU 0, same certificate and protocol settings.
nport=$(free_port)
cat >"$run/nginx.conf" <<CONF
worker_processes 1;
worker_cpu_affinity 01;
daemon off;
pid $run/nginx.pid;
error_log $run/nginx.err warn;
worker_rlimit_nofile 20000;
events { worker_connections 20000; }
http {
	access_log off;
	keepalive_requests 1000000000;
	keepalive_timeout 3600s;
	server {
		listen 127.0.0.1:$nport ssl;
		ssl_certificate $run/cert.pem;
		ssl_certificate_key $run/key.pem;
		ssl_protocols TLSv1.2 TLSv1.3;
		ssl_ecdh_curve X25519:prime256v1;
		ssl_session_cache off;
		location = /healthz { return 200 "ok\n"; }
	}
}
CONF
taskset -c 0 nginx -p "$run" -e "$run/nginx.err" -c "$run/nginx.conf" &
ng=$!
pids+=("$ng")
sleep 0.5
ngw=$(pgrep -P "$ng" | head -1)
measure nginx "$nport" "$ngw"
kill "$ng"; wait "$ng" 2>/dev/null || true

mkdir -p "$OUT"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
/usr/bin/python3 - "$run/vals" "$OUT/tls-$stamp" "$CONNS" "$HS" "$(getconf CLK_TCK)" <<'PY'
import json, sys
vals, base, conns, hs, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
r = {}
for line in open(vals):
    n, before, after, held, t0, t1, done, ramp = line.split()
    held, done = int(held), int(done or 0)
    cpu = (int(t1) - int(t0)) / hz
    r[n] = {"idle_conns_held": held,
            "userspace_bytes_per_idle_tls_conn": round((int(after) - int(before)) * 1024 / max(held, 1)),
            "handshakes": done, "server_cpu_s": cpu,
            "handshakes_per_server_cpu_s": round(done / cpu) if cpu else None,
            "handshakes_per_s_wall": round(done * 1000 / int(ramp)) if int(ramp) else None}
rs, ng = r["ringside"], r["nginx"]
ratio = lambda a, b: round(a / b, 2) if a and b else None
out = {"conns": conns, "handshakes": hs, "ringside": rs, "nginx": ng,
       "memory_ratio_ringside_over_nginx": ratio(rs["userspace_bytes_per_idle_tls_conn"], ng["userspace_bytes_per_idle_tls_conn"]),
       "handshake_ratio_ringside_over_nginx": ratio(rs["handshakes_per_server_cpu_s"], ng["handshakes_per_server_cpu_s"])}
json.dump(out, open(base + ".json", "w"), indent=1)
md = ["# TLS benchmark (%s idle TLS connections, %s full handshakes)" % (conns, hs), "",
      "| figure | ringside | nginx | ratio |", "|---|---|---|---|",
      "| userspace memory per idle TLS connection (Private_Dirty growth / held) | %d B | %d B | %s |" % (
          rs["userspace_bytes_per_idle_tls_conn"], ng["userspace_bytes_per_idle_tls_conn"], out["memory_ratio_ringside_over_nginx"]),
      "| idle TLS connections held | %d | %d | |" % (rs["idle_conns_held"], ng["idle_conns_held"]),
      "| full handshakes per server CPU-second (ECDSA P-256, X25519) | %s | %s | %s |" % (
          rs["handshakes_per_server_cpu_s"], ng["handshakes_per_server_cpu_s"], out["handshake_ratio_ringside_over_nginx"]),
      "| full handshakes per second, wall clock (client on the other core) | %s | %s | |" % (
          rs["handshakes_per_s_wall"], ng["handshakes_per_s_wall"]),
      "", "Reproduce: `bench/tls-bench.sh %d %d` (server pinned to CPU 0 with one worker, client `bench/hold --tls` on CPU 1)." % (conns, hs)]
open(base + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
