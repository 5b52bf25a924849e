#!/bin/bash
# make bench (short, < 5 min) / make bench-full. Prints every figure with the
# command that reproduces it; results go to bench/results/.
set -eu
cd "$(dirname "$0")/.."
case "${1:-short}" in
short) exec bench/engine-bench.sh 10000 5 1 ;;
full) exec bench/engine-bench.sh 30000 10 3 ;;
*) echo "usage: bench/run.sh short|full" >&2; exit 2 ;;
esac
