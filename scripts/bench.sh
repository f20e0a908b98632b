#!/usr/bin/env bash
# make bench: every benchmark in one run, then one table of ratios
# against the baselines measured in the same run (memcpy, plain pipe),
# with the goals beside them.  Numbers, not assertions: exits non-zero
# only if a benchmark itself broke.
#   BENCH_MIB=2048 BENCH_REPS=3 (see scripts/bench-fs.sh)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
out=$(mktemp -d /tmp/vdi-bench.XXXXXX)
trap 'rm -rf "$out"' EXIT
status=0

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
echo
echo "### engine (tests/bench/bench_engine)"
"$ROOT/$BUILD/bench/bench_engine" | tee "$out/engine" || status=1
echo
echo "### vdifs, vdi pipe, plain pipe (scripts/bench-fs.sh)"
BUILD=$BUILD TMPDIR=${TMPDIR:-/dev/shm} bash "$ROOT/scripts/bench-fs.sh" | tee "$out/fs" || status=1

# One table: the lines of each benchmark that carry a ratio and a goal.
eng_row() { awk -v t="$1" -v d="$2" '$1 " " $2 == t && $3 == d { print $(NF-1) }' "$out/engine"; }
fs_ratio() { grep -F "$1" "$out/fs" | head -n 1 | awk -F': *' '{ print $2 }' | awk '{ print $1 }'; }
cmds=$(awk '$1 == "64" && $2 == "KiB" && $3 == 1 { print $NF }' "$out/engine")
echo
echo "### summary (ratio = this path / baseline measured in this run)"
printf '%-44s %10s   %s\n' "measure" "value" "goal"
printf '%-44s %10s   %s\n' "engine 64 KiB, 1 device / memcpy" "$(eng_row '64 KiB' 1)" "-"
printf '%-44s %10s   %s\n' "engine 1 MiB, 1 device / memcpy" "$(eng_row '1 MiB' 1)" ">= 0.8"
printf '%-44s %10s   %s\n' "engine 1 MiB, 4 devices / memcpy" "$(eng_row '1 MiB' 4)" ">= 0.8"
printf '%-44s %10s   %s\n' "engine 4 MiB, 1 device / memcpy" "$(eng_row '4 MiB' 1)" "-"
printf '%-44s %10s   %s\n' "engine commands/s at 64 KiB (with copy)" "$cmds" ">= 100000"
printf '%-44s %10s   %s\n' "vdifs backup, 1 device / plain pipe" "$(fs_ratio 'backup 1 device  / plain pipe')" ">= 1.3"
printf '%-44s %10s   %s\n' "vdifs backup, 4 devices / plain pipe" "$(fs_ratio 'backup 4 devices / plain pipe')" "-"
printf '%-44s %10s   %s\n' "vdifs backup / vdi pipe" "$(fs_ratio 'backup 1 device  / vdi pipe')" "-"
printf '%-44s %10s   %s\n' "vdifs restore / plain pipe" "$(fs_ratio 'restore          / plain pipe')" ">= 0.8"
printf '%-44s %10s   %s\n' "vdifs daemon peak RSS" "$(grep -o 'peak [0-9]* kB' "$out/fs" | head -n1)" "flat"
exit $status
