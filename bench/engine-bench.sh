#!/bin/bash
# The engine benchmark: idle keep-alive connections held by one ringside
# process (userspace and kernel memory per connection, CPU while idle), and
# GET /healthz requests/s on one pinned core next to nginx under the same wrk
# command, alternating, median of ROUNDS.
#
#   bench/engine-bench.sh [CONNS] [WRK_SECONDS] [ROUNDS]     (defaults 30000 10 3)
#
# Needs build/release/ringside and build/release/bench/hold (`make all
# build/release/bench/hold`), wrk, nginx (nginx-light), taskset, curl, python3.
# Loopback only. Every process started here is stopped by its PID, and every
# wait is bounded. Writes bench/results/engine-<UTC stamp>.md and .json.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${1:-30000} WRK_S=${2:-10} ROUNDS=${3:-3}
B=${RINGSIDE_BUILD:-build/release}
PER_PROC=10000 # connections per hold process: under RLIMIT_NOFILE (20,000)
IDLE_S=10
OUT=${BENCH_OUT:-bench/results}

for tool in wrk nginx taskset curl /usr/bin/python3; do
	command -v "$tool" >/dev/null || { echo "engine-bench: $tool is not installed" >&2; exit 1; }
done
for bin in "$B/ringside" "$B/bench/hold"; do
	[ -x "$bin" ] || { echo "engine-bench: $bin missing: run make" >&2; exit 1; }
done
if [ "$(nproc)" -lt 2 ]; then
	echo "engine-bench: needs 2 CPUs (server on CPU 0, wrk on CPU 1)" >&2
	exit 1
fi

busy_pct() { # share of all CPUs busy over 1 s, in percent (from /proc/stat)
	local a b
	a=$(head -1 /proc/stat)
	sleep 1
	b=$(head -1 /proc/stat)
	echo "$a" "$b" | awk '{
		for (i = 2; i <= 9; i++) { t1 += $i; t2 += $(i + 11) }
		idle1 = $5 + $6; idle2 = $(5 + 11) + $(6 + 11)
		printf "%d\n", 100 * (1 - (idle2 - idle1) / (t2 - t1)) }'
}
# Optionally wait (BENCH_QUIET_WAIT seconds at most) until the machine is
# quiet: other work on a shared VM takes CPU time from the servers under test.
for _ in $(seq "${BENCH_QUIET_WAIT:-0}"); do
	[ "$(busy_pct)" -lt 15 ] && break
done
busy_start=$(busy_pct)
load_start="$(cut -d' ' -f1-3 /proc/loadavg), CPUs ${busy_start} % busy"
if [ "$busy_start" -ge 15 ]; then
	echo "engine-bench: load average $load_start: other processes share the CPUs," \
		"requests/s will be low and noisy (CPU per request and the idle figures hold)" >&2
fi
run=$(mktemp -d /tmp/rs-bench.XXXXXX)
chmod 755 "$run" # nginx's worker runs as nobody and reads $run/www
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$run"
}
trap cleanup EXIT
note() { printf '%s\t%s\n' "$1" "$2" >>"$run/cmds"; } # figure key, command
free_port() {
	/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_http() { # url: until it answers 200 (10 s at most)
	for _ in $(seq 200); do
		curl -fs -o /dev/null "$1" && return 0
		sleep 0.05
	done
	echo "engine-bench: $1 never answered" >&2
	return 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
cpu_ticks() { # pid: utime+stime of all its threads and of its children (nginx's worker)
	local p t=0
	for p in "$1" $(pgrep -P "$1" || true); do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}
sched_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f\n", s}'; }
ctxsw() { # voluntary nonvoluntary, summed over threads (status is per thread)
	cat /proc/"$1"/task/*/status |
		awk '/^voluntary_ctxt/ {v += $2} /^nonvoluntary_ctxt/ {n += $2} END {printf "%.0f %.0f\n", v, n}'
}
snapshot() { # pid tag: every /proc figure the report derives memory from
	cat "/proc/$1/smaps_rollup" >"$run/smaps.$2"
	cat /proc/meminfo >"$run/meminfo.$2"
	cat /proc/net/sockstat >"$run/sockstat.$2"
	cat /proc/slabinfo >"$run/slabinfo.$2" 2>/dev/null || : >"$run/slabinfo.$2"
}
rs_config() { # file workers port
	cat >"$1" <<JSON
{"listen": ["127.0.0.1:$3"], "workers": $2, "log_level": "warn", "state_dir": "$run",
 "metrics_listen": "",
 "limits": {"header_timeout_ms": 600000, "keepalive_timeout_ms": 3600000}}
JSON
}

# ---------------------------------------------------------------------------
# 1. CONNS idle keep-alive connections: memory and CPU.
port=$(free_port)
rs_config "$run/idle.json" 2 "$port"
"$B/ringside" --config "$run/idle.json" 2>"$run/ringside-idle.log" &
rs=$!
pids+=("$rs")
wait_http "http://127.0.0.1:$port/healthz"
note ringside_idle "$B/ringside --config idle.json   # $(tr -d '\n' <"$run/idle.json")"
# Warm up so the receive pool (workers x buffers.count x buffers.size) is
# resident before the baseline: a fixed cost, not a per-connection one.
wrk -t2 -c128 -d2s "http://127.0.0.1:$port/healthz" >/dev/null
sleep 1
snapshot "$rs" before
procs=$(((CONNS + PER_PROC - 1) / PER_PROC))
holders=()
left=$CONNS
for i in $(seq 0 $((procs - 1))); do
	n=$((left / (procs - i)))
	left=$((left - n))
	args=(--port "$port" --conns "$n" --src-base $((2 + i * 8)) --src-count 8
		--request 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n' --ramp-seconds 60 --hold-seconds 900)
	"$B/bench/hold" "${args[@]}" >"$run/hold$i.json" 2>"$run/hold$i.err" &
	holders+=($!)
	pids+=($!)
	note "hold$i" "$B/bench/hold ${args[*]:0:8} --request '${args[9]}' ${args[*]:10} &"
done
for _ in $(seq 900); do # 90 s at most; each hold gives up opening after 60 s
	ready=$(cat "$run"/hold*.err 2>/dev/null | grep -c '"event":"held"' || true)
	[ "${ready:-0}" -ge "$procs" ] && break
	sleep 0.1
done
sleep 2 # let the last answers' buffers go back and the slab settle
snapshot "$rs" after
t0=$(cpu_ticks "$rs") n0=$(sched_ns "$rs") c0=$(ctxsw "$rs")
sleep "$IDLE_S"
t1=$(cpu_ticks "$rs") n1=$(sched_ns "$rs") c1=$(ctxsw "$rs")
threads=$(ls "/proc/$rs/task" | wc -l)
healthz_after=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz" || true)
for p in "${holders[@]}"; do kill "$p" 2>/dev/null || true; done
for p in "${holders[@]}"; do wait "$p" 2>/dev/null || true; done
stop "$rs"
cat >"$run/idle.vals" <<VALS
ticks $t0 $t1
sched_ns $n0 $n1
ctxsw $c0 $c1
threads $threads
idle_s $IDLE_S
healthz_after $healthz_after
VALS

# ---------------------------------------------------------------------------
# 2. Requests/s on one core: ringside --workers 1 and nginx (1 worker), both
#    pinned to CPU 0, each loaded by the same wrk pinned to CPU 1.
rport=$(free_port) sport=$(free_port) nport=$(free_port)
rs_config "$run/rps.json" 1 "$rport"
mkdir -p "$run/www"
printf 'ok\n' >"$run/www/healthz" # the same 3 bytes as ringside's /healthz body
chmod 644 "$run/www/healthz"
nginx_conf() { # file port location-body
	cat >"$1" <<CONF
worker_processes 1;
worker_cpu_affinity 01;
daemon off;
pid $run/$(basename "$1").pid;
error_log $run/nginx.err warn;
events { worker_connections 4096; }
http {
	access_log off;
	sendfile on;
	tcp_nodelay on;
	keepalive_requests 1000000000;
	keepalive_timeout 3600s;
	open_file_cache max=64 inactive=600s;
	open_file_cache_valid 600s;
	default_type text/plain;
	server {
		listen 127.0.0.1:$2;
		root $run/www;
		location = /healthz { $3 }
	}
}
CONF
}
nginx_conf "$run/nginx-static.conf" "$sport" ''
nginx_conf "$run/nginx-return.conf" "$nport" 'return 200 "ok\n";'
cp "$run/nginx-static.conf" "$run/nginx-static.conf.txt"
WRK=(taskset -c 1 wrk -t1 -c64 -d"${WRK_S}s" --latency)
note wrk "${WRK[*]} http://127.0.0.1:PORT/healthz"
note ringside_rps "taskset -c 0 $B/ringside --config rps.json   # $(tr -d '\n' <"$run/rps.json")"
nginx_cmd="taskset -c 0 nginx -p DIR -e DIR/nginx.err"
note nginx_static "$nginx_cmd -c nginx-static.conf   # serves DIR/www/healthz ('ok\\n')"
note nginx_return "$nginx_cmd -c nginx-return.conf   # location = /healthz { return 200 \"ok\\n\"; }"

measure() { # name round
	local url p a b
	case $1 in
	ringside)
		url="http://127.0.0.1:$rport/healthz"
		taskset -c 0 "$B/ringside" --config "$run/rps.json" 2>>"$run/ringside-rps.log" &
		;;
	nginx_static | nginx_return)
		local port=$sport
		[ "$1" = nginx_return ] && port=$nport
		url="http://127.0.0.1:$port/healthz"
		taskset -c 0 nginx -c "$run/${1/_/-}.conf" -p "$run" -e "$run/nginx.err" &
		;;
	esac
	p=$!
	pids+=("$p")
	wait_http "$url"
	curl -s -D - -o "$run/body.$1" "$url" >"$run/head.$1"
	if [ "$(cat "$run/body.$1")" != ok ]; then
		echo "engine-bench: $1 does not answer 'ok' on $url" >&2
		exit 1
	fi
	a=$(cpu_ticks "$p")
	grep -E '^cpu[01] ' /proc/stat >"$run/stat.$1.$2.before"
	"${WRK[@]}" "$url" >"$run/wrk.$1.$2"
	grep -E '^cpu[01] ' /proc/stat >"$run/stat.$1.$2.after"
	b=$(cpu_ticks "$p")
	echo "$a $b" >"$run/cpu.$1.$2"
	stop "$p"
}
servers=(ringside nginx_static nginx_return)
for r in $(seq "$ROUNDS"); do
	# Alternate the order each round so a drift in the machine's speed
	# does not always favour the same server.
	if ((r % 2)); then order=("${servers[@]}"); else order=(nginx_return nginx_static ringside); fi
	for s in "${order[@]}"; do measure "$s" "$r"; done
done

# ---------------------------------------------------------------------------
# 3. Report.
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
report_failed() { # keep the measurements: the report can be fixed and rerun on them
	cp -r "$run" "/tmp/rs-bench-raw-$stamp"
	echo "engine-bench: report failed; raw measurements in /tmp/rs-bench-raw-$stamp" >&2
	exit 1
}
LOAD_START=$load_start LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg) RUN=$run STAMP=$stamp OUT=$OUT \
	CONNS=$CONNS WRK_S=$WRK_S ROUNDS=$ROUNDS PROCS=$procs \
	HZ=$(getconf CLK_TCK) NGINX_V="$(nginx -v 2>&1 | sed 's/^nginx version: //')" \
	WRK_V="$(wrk -v 2>&1 | head -1 | awk '{print $2}')" /usr/bin/python3 - <<'PY' || report_failed
import glob, json, os, re, statistics, platform

E = os.environ
run, stamp = E["RUN"], E["STAMP"]
conns, wrk_s, rounds, procs, hz = (int(E[k]) for k in ("CONNS", "WRK_S", "ROUNDS", "PROCS", "HZ"))

def kv(path):
    out = {}
    for line in open(path):
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":"):
            out[parts[0][:-1]] = int(parts[1])
    return out

def slabs(path):
    out = {}
    for line in open(path):
        f = line.split()
        if len(f) > 5 and not line.startswith(("slabinfo", "#")):
            out[f[0]] = int(f[2]) * int(f[3])  # num_objs * objsize
    return out

def sockstat_tcp_pages(path):
    m = re.search(r"^TCP:.* mem (\d+)", open(path).read(), re.M)
    return int(m.group(1)) if m else 0

vals = {}
for line in open(f"{run}/idle.vals"):
    k, *v = line.split()
    vals[k] = v
holds = [json.loads(open(f).read()) for f in sorted(glob.glob(f"{run}/hold*.json"))
         if os.path.getsize(f)]
held = sum(h["opened"] for h in holds)
dropped = sum(h["dropped_while_idle"] for h in holds)
failed = sum(h["failed"] + h["errors"] for h in holds)
ramp_ms = max((h["ramp_ms"] for h in holds), default=0)
n = max(held, 1)
s0, s1 = kv(f"{run}/smaps.before"), kv(f"{run}/smaps.after")
m0, m1 = kv(f"{run}/meminfo.before"), kv(f"{run}/meminfo.after")
per = lambda a, b, key: round((b[key] - a[key]) * 1024 / n)
slab0, slab1 = slabs(f"{run}/slabinfo.before"), slabs(f"{run}/slabinfo.after")
top = sorted(((slab1.get(k, 0) - slab0.get(k, 0), k) for k in set(slab0) | set(slab1)),
             reverse=True)[:6]
tcp_pages = (sockstat_tcp_pages(f"{run}/sockstat.after")
             - sockstat_tcp_pages(f"{run}/sockstat.before"))
idle_s = int(vals["idle_s"][0])
t0, t1 = (int(x) for x in vals["ticks"])
n0, n1 = (int(x) for x in vals["sched_ns"])
v0, nv0, v1, nv1 = (int(x) for x in vals["ctxsw"])

idle = {
    "conns_requested": conns, "hold_processes": procs, "conns_held": held,
    "conns_failed": failed, "dropped_while_idle": dropped, "ramp_ms": ramp_ms,
    "healthz_after_hold": int(vals["healthz_after"][0]), "threads": int(vals["threads"][0]),
    "rss_kib_before": s0["Rss"], "rss_kib_after": s1["Rss"],
    "user_bytes_per_conn_private_dirty": per(s0, s1, "Private_Dirty"),
    "user_bytes_per_conn_pss": per(s0, s1, "Pss"),
    "user_bytes_per_conn_rss": per(s0, s1, "Rss"),
    "kernel_slab_bytes_per_conn_both_ends": per(m0, m1, "Slab"),
    "kernel_sunreclaim_bytes_per_conn_both_ends": per(m0, m1, "SUnreclaim"),
    "kernel_slab_bytes_per_conn_one_end_estimate": round(per(m0, m1, "Slab") / 2),
    "kernel_tcp_buffer_pages_after": tcp_pages,
    "slab_growth_top_caches_bytes": {k: d for d, k in top if d > 0},
    "idle_seconds": idle_s,
    "idle_cpu_percent_ticks": round((t1 - t0) / hz / idle_s * 100, 3),
    "idle_cpu_percent_schedstat": round((n1 - n0) / 1e9 / idle_s * 100, 4),
    "idle_voluntary_ctxt_switches_per_s": round((v1 - v0) / idle_s, 1),
    "idle_nonvoluntary_ctxt_switches_per_s": round((nv1 - nv0) / idle_s, 1),
    "hold_answer_us_p99_max": max((h["answer_us"]["p99"] for h in holds), default=0),
}

def wrk_parse(path):
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    reqs = int(re.search(r"(\d+) requests in", text).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errs = re.search(r"Socket errors: (.*)", text)
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    def lat(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        return round(float(m.group(1)) * unit[m.group(2)], 3) if m else None
    return {"rps": rps, "requests": reqs, "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errs.group(1) if errs else "", "p50_ms": lat(50), "p99_ms": lat(99)}

def cpu_busy(prefix):
    def read(path):
        out = {}
        for line in open(path):
            f = line.split()
            out[f[0]] = [int(x) for x in f[1:]]
        return out
    a, b = read(prefix + ".before"), read(prefix + ".after")
    res = []
    for cpu in ("cpu0", "cpu1"):
        d = [y - x for x, y in zip(a[cpu], b[cpu])]
        total, idle = sum(d[:8]), d[3] + d[4]  # user..steal; idle + iowait
        res.append(round((total - idle) / max(total, 1) * 100, 1))
    return res

rps = {}
for srv in ("ringside", "nginx_static", "nginx_return"):
    runs = []
    for r in range(1, rounds + 1):
        w = wrk_parse(f"{run}/wrk.{srv}.{r}")
        a, b = (int(x) for x in open(f"{run}/cpu.{srv}.{r}").read().split())
        w["cpu_s_per_100k"] = round((b - a) / hz / max(w["requests"], 1) * 100000, 3)
        # The server's share of its core: below ~90 % the client (or a
        # neighbour on this shared VM) was the limit, not the server.
        w["server_core_percent"] = round((b - a) / hz / wrk_s * 100, 1)
        w["cpu0_busy_percent"], w["cpu1_busy_percent"] = cpu_busy(f"{run}/stat.{srv}.{r}")
        runs.append(w)
    head = open(f"{run}/head.{srv}").read()
    rps[srv] = {"runs": runs, "median_rps": statistics.median(x["rps"] for x in runs),
                "median_p99_ms": statistics.median(x["p99_ms"] or 0 for x in runs),
                "median_cpu_s_per_100k": round(statistics.median(x["cpu_s_per_100k"] for x in runs), 3),
                "median_server_core_percent": statistics.median(x["server_core_percent"] for x in runs),
                "median_cpu1_busy_percent": statistics.median(x["cpu1_busy_percent"] for x in runs),
                "response_bytes": len(head.encode()) + 3}
ratio_static = round(rps["ringside"]["median_rps"] / rps["nginx_static"]["median_rps"], 2)
ratio_return = round(rps["ringside"]["median_rps"] / rps["nginx_return"]["median_rps"], 2)
eff_static = round(rps["nginx_static"]["median_cpu_s_per_100k"] / max(rps["ringside"]["median_cpu_s_per_100k"], 1e-9), 2)
eff_return = round(rps["nginx_return"]["median_cpu_s_per_100k"] / max(rps["ringside"]["median_cpu_s_per_100k"], 1e-9), 2)
bad = sum(x["non_2xx"] for s in rps.values() for x in s["runs"])

cmds = {}
for line in open(f"{run}/cmds"):
    k, c = line.rstrip("\n").split("\t", 1)
    cmds[k] = c.replace(run, "DIR")

result = {
    "stamp": stamp, "command": f"bench/engine-bench.sh {conns} {wrk_s} {rounds}",
    "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                "nginx": E["NGINX_V"], "wrk": E["WRK_V"]},
    "idle": idle, "rps": rps,
    "rps_ratio_ringside_over_nginx_static": ratio_static,
    "rps_ratio_ringside_over_nginx_return": ratio_return,
    "cpu_per_request_ratio_nginx_static_over_ringside": eff_static,
    "cpu_per_request_ratio_nginx_return_over_ringside": eff_return,
    "loadavg_start": E["LOAD_START"], "loadavg_end": E["LOAD_END"],
    "wrk_non_2xx_total": bad, "commands": cmds,
}
base = f"{E['OUT']}/engine-{stamp}"
with open(base + ".json", "w") as f:
    json.dump(result, f, indent=1)
    f.write("\n")

I, R = idle, rps
nginx_conf_text = open(f"{run}/nginx-static.conf.txt").read().replace(run, "DIR").rstrip()
def runs(s):
    return " / ".join(f"{x['rps']:.0f}" for x in R[s]["runs"])
def row(s, label, bold):
    x = R[s]
    med = f"**{x['median_rps']:.0f}**" if bold else f"{x['median_rps']:.0f}"
    per_cpu_s = round(100000 / max(x["median_cpu_s_per_100k"], 1e-9))
    return (f"| {label} | {med} | {runs(s)} | {x['median_p99_ms']} ms "
            f"| {x['median_cpu_s_per_100k']} | {per_cpu_s} "
            f"| {x['median_server_core_percent']} % | {x['median_cpu1_busy_percent']} % "
            f"| {x['response_bytes']} |")
rows = "\n".join([row("ringside", "ringside", True),
                  row("nginx_static", "nginx, static 3-byte file", True),
                  row("nginx_return", 'nginx, `return 200 "ok\\n"`', False)])
hold_cmds = "\n".join(cmds[k] for k in sorted(cmds) if k.startswith("hold"))
slab_top = ", ".join(f"{k} {d / n:.0f} B" for k, d in I["slab_growth_top_caches_bytes"].items())
md = f"""# Engine benchmark {stamp}

`{result['command']}` — {os.cpu_count()} vCPU, Linux {platform.release()}, {E['NGINX_V']}, wrk {E['WRK_V']}.
Load average at start {E['LOAD_START']}, at end {E['LOAD_END']} (other work on this shared VM
competes for both CPUs: absolute figures drift between runs; compare within a run).

## Idle keep-alive connections ({held} held by one ringside process, 2 workers)

| figure | value | how |
|---|---|---|
| connections held / requested | {held} / {conns} ({failed} failed, {I['dropped_while_idle']} dropped while idle, ramp {ramp_ms / 1000:.1f} s, `/healthz` afterwards: {I['healthz_after_hold']}) | {procs} × `bench/hold`, see commands |
| **userspace memory per idle connection** | **{I['user_bytes_per_conn_private_dirty']} B** Private_Dirty (Pss {I['user_bytes_per_conn_pss']} B, Rss {I['user_bytes_per_conn_rss']} B) | growth of `/proc/PID/smaps_rollup` ÷ {held}; Rss {I['rss_kib_before']} → {I['rss_kib_after']} KiB |
| **kernel memory per connection, both ends** | **{I['kernel_slab_bytes_per_conn_both_ends']} B** Slab (SUnreclaim {I['kernel_sunreclaim_bytes_per_conn_both_ends']} B) | growth of `Slab`/`SUnreclaim` in `/proc/meminfo` ÷ {held}; counts the client's socket too |
| kernel memory per connection, server end (estimate) | ≈ {I['kernel_slab_bytes_per_conn_one_end_estimate']} B | half the line above: both ends are TCP sockets of the same kind |
| slab caches that grew most (per connection, both ends) | {slab_top or 'n/a'} | `/proc/slabinfo` num_objs × objsize |
| TCP buffer pages after the hold | {I['kernel_tcp_buffer_pages_after']} | `/proc/net/sockstat` TCP mem (idle sockets queue nothing) |
| **CPU while idle** ({idle_s} s) | **{I['idle_cpu_percent_schedstat']} %** of one core ({I['idle_cpu_percent_ticks']} % by ticks) | utime+stime from `/proc/PID/stat`; on-CPU ns from `/proc/PID/task/*/schedstat` |
| context switches while idle | {I['idle_voluntary_ctxt_switches_per_s']}/s voluntary, {I['idle_nonvoluntary_ctxt_switches_per_s']}/s involuntary ({I['threads']} threads) | `voluntary_ctxt_switches` in `/proc/PID/task/*/status`, summed |

## GET /healthz requests/s on one core (median of {rounds}, alternating)

Server pinned to CPU 0 (ringside `--workers 1`; nginx `worker_processes 1`), wrk pinned to CPU 1:
`{cmds['wrk']}`.

| server | req/s (median) | runs | p99 latency | server CPU s / 100k req | req per server CPU-second | server's use of CPU 0 | CPU 1 (wrk) busy | response bytes |
|---|---|---|---|---|---|---|---|---|
{rows}

**requests/s, ringside / nginx (static file): {ratio_static}×**; ringside / nginx (`return 200`): {ratio_return}×.
**CPU per request, nginx (static file) / ringside: {eff_static}×**; nginx (`return 200`) / ringside: {eff_return}×
(how many times more CPU nginx spends per request; unlike requests/s it does not depend on how much
of CPU 0 the server got, so it is the steadier figure when the machine is busy).
Non-2xx answers counted by wrk: {bad}.

## Commands

```sh
# idle connections (DIR is a temporary directory)
{cmds['ringside_idle']}
wrk -t2 -c128 -d2s http://127.0.0.1:PORT/healthz     # warm-up before the baseline
{hold_cmds}
# then: /proc/PID/smaps_rollup, /proc/meminfo, /proc/slabinfo before and after; /proc/PID/stat,
# /proc/PID/task/*/schedstat and */status at the start and end of {idle_s} s idle
# requests/s
{cmds['ringside_rps']}
{cmds['nginx_static']}
{cmds['nginx_return']}
{cmds['wrk']}
```

nginx configuration (static file variant):

```nginx
{nginx_conf_text}
```
"""
with open(base + ".md", "w") as f:
    f.write(md)
print(md)
print(f"written: {base}.md {base}.json")
PY
