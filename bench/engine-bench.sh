#!/bin/bash
# The engine benchmark (issue 2): idle keep-alive connections held by one
# ringside process — userspace and kernel memory per connection, idle CPU —
# and GET /healthz requests/s per worker core next to nginx serving a static
# file of the same size, same wrk command, same machine, alternating runs.
#
#   bench/engine-bench.sh [CONNS] [WRK_SECONDS] [ROUNDS]     (defaults 30000 10 3)
#
# Loopback only; every process started here is stopped by its PID.
set -eu
cd "$(dirname "$0")/.."
CONNS=${1:-30000} WRK_S=${2:-10} ROUNDS=${3:-3}
B=build/release
out=bench/results
mkdir -p "$out"
run=$(mktemp -d /tmp/rs-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$run"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
kv() { awk -v k="$2" '$1==k":" {print $2}' "$1"; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
ctxsw() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {s+=$2} END {print s}'; }

start_ringside() { # workers port
	cat >"$run/rs.json" <<JSON
{"listen":["127.0.0.1:$2"],"workers":$1,"log_level":"warn","state_dir":"$run","metrics_listen":"",
 "limits":{"header_timeout_ms":600000,"keepalive_timeout_ms":3600000}}
JSON
	$B/ringside --config "$run/rs.json" 2>"$run/rs.log" &
	rs_pid=$!
	pids+=("$rs_pid")
	for _ in $(seq 100); do curl -fs "http://127.0.0.1:$2/healthz" >/dev/null 2>&1 && return; sleep 0.05; done
	cat "$run/rs.log"; exit 1
}

# --- 1. idle connections: memory and CPU ---
port=$(free_port)
start_ringside 2 "$port"
# Warm up first: the receive pool's pages (workers x buffers.count x
# buffers.size) are touched once, a fixed cost that is not per connection.
wrk -t2 -c128 -d2s "http://127.0.0.1:$port/healthz" >/dev/null
sleep 0.5
pd0=$(kv /proc/$rs_pid/smaps_rollup Private_Dirty) ps0=$(kv /proc/$rs_pid/smaps_rollup Pss)
slab0=$(kv /proc/meminfo Slab)
procs=$(( (CONNS + 9999) / 10000 ))
per=$(( CONNS / procs ))
holders=()
for i in $(seq 0 $((procs - 1))); do
	$B/bench/hold --port "$port" --conns "$per" --src-base $((2 + i * 8)) --src-count 8 \
		--hold-seconds 600 >"$run/hold$i.log" &
	holders+=($!); pids+=($!)
done
for i in $(seq 0 $((procs - 1))); do
	for _ in $(seq 600); do grep -q '"held"' "$run/hold$i.log" 2>/dev/null && break; sleep 0.2; done
done
held=$(cat "$run"/hold*.log | python3 -c 'import sys,json;print(sum(json.loads(l)["answered"] for l in sys.stdin if "held" in l))')
sleep 2
pd1=$(kv /proc/$rs_pid/smaps_rollup Private_Dirty) ps1=$(kv /proc/$rs_pid/smaps_rollup Pss)
slab1=$(kv /proc/meminfo Slab)
t0=$(cpu_ticks $rs_pid) c0=$(ctxsw $rs_pid)
sleep 10
t1=$(cpu_ticks $rs_pid) c1=$(ctxsw $rs_pid)
still=$(curl -fs "http://127.0.0.1:$port/healthz" && echo yes || echo no)
for p in "${holders[@]}"; do kill "$p"; done
wait "${holders[@]}" 2>/dev/null || true
dropped=$(cat "$run"/hold*.log | python3 -c 'import sys,json;print(sum(json.loads(l).get("dropped_while_idle",0) for l in sys.stdin if "done" in l))')
kill "$rs_pid"; wait "$rs_pid" || true
hz=$(getconf CLK_TCK)
mem_user=$(python3 -c "print(round(($pd1-$pd0)*1024/$held))")
mem_pss=$(python3 -c "print(round(($ps1-$ps0)*1024/$held))")
mem_kern=$(python3 -c "print(round(($slab1-$slab0)*1024/$held))")
idle_cpu=$(python3 -c "print(round(($t1-$t0)/$hz/10*100,3))")
idle_cs=$(python3 -c "print(round(($c1-$c0)/10,1))")

# --- 2. requests/s per core: ringside vs nginx ---
printf 'ok\n' >"$run/ok"
nport=$(free_port)
cat >"$run/nginx.conf" <<CONF
worker_processes 1;
worker_cpu_affinity 01;
pid $run/nginx.pid;
error_log $run/nginx.err warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  server { listen 127.0.0.1:$nport; root $run; location = /healthz { try_files /ok =404; default_type text/plain; } }
}
CONF
wrk_rps() { taskset -c 1 wrk -t1 -c64 -d"${WRK_S}s" "$1" | awk '/Requests\/sec/ {print $2}'; }
rs_r=() ng_r=() rs_cpu=()
rport=$(free_port)
for r in $(seq "$ROUNDS"); do
	printf '{"listen":["127.0.0.1:%s"],"workers":1,"log_level":"warn","metrics_listen":""}' "$rport" >"$run/rs1.json"
	taskset -c 0 bash -c "exec $B/ringside --config $run/rs1.json" 2>"$run/rs1.log" &
	p=$!; pids+=("$p")
	for _ in $(seq 100); do curl -fs "http://127.0.0.1:$rport/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
	a=$(cpu_ticks $p)
	rps=$(wrk_rps "http://127.0.0.1:$rport/healthz")
	b=$(cpu_ticks $p)
	rs_r+=("$rps")
	rs_cpu+=("$(python3 -c "print(round(($b-$a)/$hz/($rps*$WRK_S)*100000,3))")")
	kill "$p"; wait "$p" 2>/dev/null || true
	taskset -c 0 nginx -c "$run/nginx.conf" -p "$run" 2>/dev/null &
	p=$!; pids+=("$p")
	for _ in $(seq 100); do curl -fs "http://127.0.0.1:$nport/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
	ng_r+=("$(wrk_rps "http://127.0.0.1:$nport/healthz")")
	kill "$p"; wait "$p" 2>/dev/null || true
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rs_m=$(med "${rs_r[@]}") ng_m=$(med "${ng_r[@]}") cpu_m=$(med "${rs_cpu[@]}")
ratio=$(python3 -c "print(round($rs_m/$ng_m,2))")

stamp=$(date -u +%Y%m%dT%H%M%SZ)
cat >"$out/engine-$stamp.json" <<JSON
{"conns_requested":$CONNS,"conns_held":$held,"dropped_while_idle":$dropped,
 "user_bytes_per_conn_private_dirty":$mem_user,"user_bytes_per_conn_pss":$mem_pss,
 "kernel_slab_bytes_per_conn_both_ends":$mem_kern,"idle_cpu_percent":$idle_cpu,
 "idle_context_switches_per_s":$idle_cs,"healthz_after_hold":"$still",
 "rps_ringside_1core":[$(IFS=,; echo "${rs_r[*]}")],"rps_nginx_1core":[$(IFS=,; echo "${ng_r[*]}")],
 "rps_ratio_median":$ratio,"ringside_cpu_s_per_100k_requests":$cpu_m,
 "kernel":"$(uname -r)","cpus":$(nproc)}
JSON
cat >"$out/engine-$stamp.md" <<MD
# Engine benchmark, $stamp

Machine: $(nproc) vCPU, $(uname -r). Command: \`bench/engine-bench.sh $CONNS $WRK_S $ROUNDS\`

| figure | ringside | nginx 1.22 | ratio |
|---|---|---|---|
| idle keep-alive connections held by one process | $held of $CONNS (dropped while idle: $dropped) | — | — |
| userspace memory per idle connection (Private_Dirty growth ÷ N) | $mem_user B (PSS: $mem_pss B) | — | — |
| kernel slab per connection, both ends (client + server socket) | $mem_kern B (≈ $((mem_kern / 2)) B per end) | — | — |
| CPU while $held connections sit idle (10 s) | $idle_cpu % of a core, $idle_cs context switches/s | — | — |
| GET /healthz requests/s, 1 worker pinned to CPU 0, wrk -t1 -c64 on CPU 1 (median of $ROUNDS) | $rs_m | $ng_m (static 3-byte file) | $ratio |
| ringside CPU seconds per 100k requests | $cpu_m | — | — |

Runs: ringside ${rs_r[*]} / nginx ${ng_r[*]} req/s.
MD
cat "$out/engine-$stamp.md"
