#!/usr/bin/env bash
# make bench: every benchmark in one run, then one table of ratios
# against the baselines measured in the same run (memcpy, plain pipe, the
# FUSE ceiling of tests/bench/fuse_ceiling.c, dd of the database), with
# the goals beside them (issues 2, 4, 11) and whether each is met.
# Numbers, not assertions: exits non-zero only if a benchmark itself broke.
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
echo "### vdifs, FUSE ceiling, vdi pipe, plain pipe (scripts/bench-fs.sh)"
BUILD=$BUILD TMPDIR=${TMPDIR:-/dev/shm} bash "$ROOT/scripts/bench-fs.sh" | tee "$out/fs" || status=1

# One table: the lines of each benchmark that carry a ratio and a goal.
eng_row() { awk -v t="$1" -v d="$2" '$1 " " $2 == t && $3 == d { print $(NF-1) }' "$out/engine"; }
# fs_ratio LABEL: the value of bench-fs's ratio line LABEL (labels hold no ':')
fs_ratio() { grep -F "$1" "$out/fs" | head -n 1 | awk -F': *' '{ print $2 }' | awk '{ print $1 }'; }
# fs_cs LABEL: the context switches per MiB (client + server) of a path's
# row: the figure in front of "(client + server)"
fs_cs() { grep -F "$1" "$out/fs" | head -n 1 | awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^\(/) { print $(i - 1); exit } print "-" }'; }
# fs_cpu LABEL: vdi exec's CPU share of a path's time ("NN%")
fs_cpu() { grep -F "$1" "$out/fs" | head -n 1 | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+%$/) { print $i; exit } print "-" }'; }
cmds=$(awk '$1 == "64" && $2 == "KiB" && $3 == 1 { print $NF }' "$out/engine")
# line MEASURE VALUE GOAL: a row, and whether a ">= X" goal is met
line() {
	local met=
	case $3 in
	">= "*) met=$(awk -v v="$2" -v g="${3#>= }" 'BEGIN { if (v !~ /^[0-9.]+$/) print "-"; else print (v + 0 >= g + 0) ? "yes" : "NO" }') ;;
	*..*) met=$(awk -v v="$2" -v lo="${3%..*}" -v hi="${3#*..}" 'BEGIN { if (v !~ /^[0-9.]+$/) print "-"; else print (v + 0 >= lo + 0 && v + 0 <= hi + 0) ? "yes" : "NO" }') ;;
	esac
	printf '%-50s %10s   %-10s %s\n' "$1" "$2" "$3" "$met"
}
echo
echo "### summary (ratio = this path / baseline measured in this run; vdifs rows: best of ${BENCH_REPS:-3} rounds)"
printf '%-50s %10s   %-10s %s\n' "measure" "value" "goal" "met"
line "engine 64 KiB, 1 device / memcpy" "$(eng_row '64 KiB' 1)" "-"
line "engine 1 MiB, 1 device / memcpy" "$(eng_row '1 MiB' 1)" ">= 0.8"
line "engine 1 MiB, 4 devices / memcpy" "$(eng_row '1 MiB' 4)" ">= 0.8"
line "engine 4 MiB, 1 device / memcpy" "$(eng_row '4 MiB' 1)" "-"
line "engine commands/s at 64 KiB (with copy)" "$cmds" ">= 100000"
line "vdifs backup, generated source / backup ceiling" "$(fs_ratio 'generated source, backup 1 device / backup ceiling')" ">= 0.8"
line "vdifs backup, file source / backup ceiling" "$(fs_ratio 'backup 1 device  / backup ceiling')" "-"
line "vdifs restore / restore ceiling" "$(fs_ratio 'restore          / restore ceiling')" ">= 0.6"
line "vdifs backup, 4 devices / 1 device" "$(fs_ratio 'backup 4 devices / backup 1 device')" ">= 1.0"
line "vdifs backup, file source / dd of the database" "$(fs_ratio 'file source, backup 1 device / dd of db')" ">= 0.8"
line "vdifs sqlvdi backup / libvdi backup" "$(fs_ratio 'sqlvdi backup    / libvdi backup')" ">= 0.95"
line "vdifs sqlvdi restore / libvdi restore" "$(fs_ratio 'sqlvdi restore   / libvdi restore')" ">= 0.95"
line "vdifs backup, 16 devices / 1 device" "$(fs_ratio 'backup 16 devices / backup 1 device')" "-"
line "vdifs .status rate / dd's rate, 1 device" "$(fs_ratio ".status rate / dd's rate")" "0.95..1.05"
line "vdifs tar of 4 devices / 4 parallel readers" "$(fs_ratio 'tar, 4 devices   / 4 parallel readers')" "-"
line "vdifs restore / dd of the backup into a new file" "$(fs_ratio 'restore          / dd of bak into a new file')" "-"
line "vdifs backup, 1 device / plain pipe" "$(fs_ratio 'backup 1 device  / plain pipe')" ">= 1.3"
line "vdifs backup, 4 devices / plain pipe" "$(fs_ratio 'backup 4 devices / plain pipe')" "-"
line "vdifs backup / vdi pipe" "$(fs_ratio 'backup 1 device  / vdi pipe')" "-"
line "vdifs restore / plain pipe" "$(fs_ratio 'restore          / plain pipe')" ">= 0.8"
line "context switches/MiB, backup ceiling" "$(fs_cs 'FUSE ceiling read')" "-"
line "context switches/MiB, vdifs backup 1 device" "$(fs_cs 'vdifs backup, 1 device')" "down"
line "context switches/MiB, restore ceiling" "$(fs_cs 'FUSE ceiling write')" "-"
line "context switches/MiB, vdifs restore" "$(fs_cs 'vdifs restore, dd')" "down"
line "vdi exec CPU / time, vdifs backup 1 device" "$(fs_cpu 'vdifs backup, 1 device')" "-"
line "vdi exec CPU / time, vdifs restore" "$(fs_cpu 'vdifs restore, dd')" "-"
line "vdifs daemon peak RSS" "$(grep -o 'peak [0-9]* kB' "$out/fs" | head -n1)" "flat"
grep '^scale' "$out/fs" || true
exit $status
