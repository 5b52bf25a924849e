#!/bin/bash
# `make bench` runs `bench/run.sh short` (~13 minutes): the relays side by
# side (bench/relay-bench.py short: ringside, the floor relay, nginx,
# HAProxy, websockify, nginx in front of websockify; small counts; 3
# interleaved rounds, medians with their spread). `make bench-full` runs
# `bench/run.sh full`: the engine against nginx (30,000 idle connections,
# 10 s wrk runs, 3 rounds), TLS against nginx, and the relays at 50,000
# consoles with every message size, 3 interleaved rounds (~40 minutes of
# the ~45); it first waits (up to BENCH_QUIET_WAIT
# s, default 300) for the CPUs to be quiet. Every figure is printed with the
# command that reproduces it; Markdown, JSON and SVG go to bench/results/
# (BENCH_OUT overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-short}" in
short)
	echo "== bench/relay-bench.py short (bench/README.md explains each figure)"
	exec /usr/bin/python3 bench/relay-bench.py short
	;;
full)
	export BENCH_QUIET_WAIT=${BENCH_QUIET_WAIT:-300}
	echo "== bench/engine-bench.sh 30000 10 3"
	bench/engine-bench.sh 30000 10 3
	echo "== bench/tls-bench.sh 15000 10000"
	bench/tls-bench.sh 15000 10000
	echo "== bench/relay-bench.py full"
	/usr/bin/python3 bench/relay-bench.py full
	;;
*)
	echo "usage: bench/run.sh short|full" >&2
	exit 2
	;;
esac
