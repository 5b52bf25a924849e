#!/bin/bash
# `make bench` runs `bench/run.sh short` (under 5 minutes: 10,000 idle
# connections, 5 s wrk runs); `make bench-full` runs `bench/run.sh full`
# (30,000 idle connections, 10 s wrk runs). Both alternate ringside and nginx
# 3 times and report medians; full first waits (up to BENCH_QUIET_WAIT s,
# default 300) for the CPUs to be quiet. Every figure is printed with the
# command that reproduces it; Markdown and JSON go to bench/results/
# (BENCH_OUT overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-short}" in
short) args=(10000 5 3) tls=(5000 3000) cons=(5000 20000) ;;
full)
	args=(30000 10 3) tls=(15000 10000) cons=(50000 50000)
	# Wait up to 5 minutes for the CPUs to be quiet before measuring.
	export BENCH_QUIET_WAIT=${BENCH_QUIET_WAIT:-300}
	;;
*)
	echo "usage: bench/run.sh short|full" >&2
	exit 2
	;;
esac
echo "== bench/engine-bench.sh ${args[*]}" \
	"(reproduce with the same command; bench/README.md explains each figure)"
bench/engine-bench.sh "${args[@]}"
echo "== bench/tls-bench.sh ${tls[*]}"
bench/tls-bench.sh "${tls[@]}"
echo "== bench/console-bench.sh ${cons[*]}"
bench/console-bench.sh "${cons[@]}"
