#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench-fs.sh - throughput of backups and restores through a vdifs mount
# (issues 4 and 11), against what FUSE itself can do here (the ceiling,
# tests/bench/fuse_ceiling.c), the same bytes through a plain pipe and
# through `vdi pipe`, and a plain read of the database file, in one run.
# A benchmark, not a test: it prints rates, ratios, context switches per
# MiB and the daemon's peak RSS, and fails only if something broke.
#
#   BUILD=build scripts/bench-fs.sh            # 2 GiB database
#   BENCH_MIB=8192 BENCH_DB=sparse scripts/bench-fs.sh   # the 8 GiB RSS check
#   BENCH_REPS=5 TMPDIR=/dev/shm scripts/bench-fs.sh
#   BENCH_VERBOSE=1 ...                        # every round's figures on stderr
#
# Each figure is the best of BENCH_REPS rounds (default 3), every round
# measuring every path once, so that a burst of load from elsewhere on a
# shared 2-core machine hits baselines and candidates alike.
# The database is a file in TMPDIR whose pages hold data (BENCH_DB=filled,
# the default: reading it costs a page-cache copy and no disk, as a warm
# database does) or a sparse file (BENCH_DB=sparse: its holes read as the
# zero page, far cheaper than any real file, so `dd of db` is then no
# fair file source); the restored database lands in the page cache too.
# MAXTRANSFERSIZE 1 MiB everywhere.
#
# Paths (each one row):
#   plain pipe        dd if=bak bs=1M | dd of=/dev/null
#   ceiling read      dd if=CEIL/read of=/dev/null bs=1M count=MIB: a FUSE
#                     file whose replies come from another process's shm
#   ceiling write     dd if=/dev/zero of=CEIL/write bs=1M count=MIB, until
#                     the second process drained it
#   dd of db          dd if=$VDI_DATA_DIR/db.mdf of=/dev/null bs=1M: what
#                     the file source costs by itself
#   dd into new file  dd if=bak of=$VDI_DATA_DIR/r.mdf bs=1M: what writing
#                     the restored database costs by itself
#   vdifs backup      1 device, 4 devices (4 x dd), 4 devices as one tar
#                     stream (cat SET/SET.tar)
#   vdi pipe          backup and restore without FUSE
#   vdifs restore     dd of=device bs=1M
#   sqlvdi            vdifs -o sqlvdi=$BUILD/libsqlvdi.so (the Microsoft-ABI
#                     backend): backup 1 device, restore
# Context switches: per MiB moved, of the client side (the vdifs daemon,
# every thread, with perf stat if it can attach, else from
# /proc/PID/task/*/status; `vdi pipe` and the ceiling's daemon and helper
# from rusage) plus the server (`vdi exec`, every thread, from wait4's
# rusage via build/bench/rusage_run).  A "+" marks a lower bound (no perf:
# a daemon thread ended during the path and took its count along).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) BDIR=$BUILD ;; *) BDIR=$ROOT/$BUILD ;; esac
VDIFS=$BDIR/vdifs
VDI=$BDIR/vdi
RU=$BDIR/bench/rusage_run
CEILING=$BDIR/bench/fuse_ceiling
SQLVDI=$BDIR/libsqlvdi.so
MIB=${BENCH_MIB:-2048}
REPS=${BENCH_REPS:-3}
TAG=fsb-$$
T=$(mktemp -d "${TMPDIR:-/tmp}/vdifs-bench.XXXXXX")
MNT=$T/mnt   # vdifs, libvdi backend
SMNT=$T/smnt # vdifs -o sqlvdi=...
CMNT=$T/cmnt # the FUSE ceiling
export VDI_DATA_DIR=$T/data
mkdir -p "$MNT" "$SMNT" "$CMNT" "$VDI_DATA_DIR"
FS_PID='' SFS_PID='' CEIL_PID=''
SAMPLER=
WITH="BLOCKSIZE=65536, BUFFERCOUNT=16, MAXTRANSFERSIZE=1048576"

unmount() { # MOUNTPOINT PID
	mountpoint -q "$1" && { fusermount3 -u "$1" 2>/dev/null || fusermount3 -uz "$1"; }
	[ -n "$2" ] && { timeout 10 tail --pid="$2" -f /dev/null; kill -9 "$2" 2>/dev/null; }
}
cleanup() {
	# a reader that went away (| head) must not stop the cleanup half way
	trap '' PIPE INT TERM HUP
	exec >/dev/null 2>&1
	[ -n "$SAMPLER" ] && kill "$SAMPLER"
	unmount "$MNT" "$FS_PID"
	unmount "$SMNT" "$SFS_PID"
	unmount "$CMNT" "$CEIL_PID"
	(cd /dev/shm && rm -f vdi*."$TAG"-*)
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP PIPE

now() { date +%s%N; }
die() { echo "bench-fs: $*" >&2; exit 1; }
for f in "$VDIFS" "$VDI" "$RU" "$CEILING"; do
	[ -x "$f" ] || die "$f is missing: run make all tests"
done

BYTES=$((MIB * 1024 * 1024))
# db.mdf (when filled), the backup and r.mdf live in TMPDIR: on tmpfs,
# in memory, and this machine has no swap
if [ "$(stat -f -c %T "$T")" = tmpfs ]; then
	need=$((MIB * 2))
	[ "${BENCH_DB:-filled}" = filled ] && need=$((MIB * 3))
	avail=$(awk '/^MemAvailable/ { print int($2 / 1024) }' /proc/meminfo)
	[ "$need" -lt $((avail * 9 / 10)) ] ||
		die "BENCH_MIB=$MIB needs $need MiB in TMPDIR (tmpfs, memory) and $avail MiB are available: use BENCH_DB=sparse (db.mdf as a hole file) or a smaller BENCH_MIB"
fi
case ${BENCH_DB:-filled} in
sparse) truncate -s "${MIB}M" "$VDI_DATA_DIR/db.mdf" ;;
filled) yes 'vdifs bench: a page of the database, not a hole' | head -c "$BYTES" >"$VDI_DATA_DIR/db.mdf" ;;
*) die "BENCH_DB=${BENCH_DB}: sparse or filled is allowed" ;;
esac
cat "$VDI_DATA_DIR/db.mdf" >/dev/null

mount_fs() { # PIDVAR MOUNTPOINT LOG COMMAND...: mount, the daemon's pid in PIDVAR
	local var=$1 m=$2 log=$3
	shift 3
	"$@" "$m" -f >/dev/null 2>"$log" &
	printf -v "$var" %s $!
	for _ in $(seq 100); do mountpoint -q "$m" && return 0; sleep 0.05; done
	return 1
}
mount_fs FS_PID "$MNT" "$T/vdifs.log" "$VDIFS" || die "mount failed: $(cat "$T/vdifs.log")"
mount_fs CEIL_PID "$CMNT" "$T/ceiling.log" "$CEILING" ||
	die "mount of the ceiling failed: $(cat "$T/ceiling.log")"
HAVE_SQLVDI=0
if [ -e "$SQLVDI" ]; then
	mount_fs SFS_PID "$SMNT" "$T/svdifs.log" "$VDIFS" -o "sqlvdi=$SQLVDI" ||
		die "mount with sqlvdi=$SQLVDI failed: $(cat "$T/svdifs.log")"
	HAVE_SQLVDI=1
fi

# RSS samples of the daemon every 0.2 s
(while kill -0 "$FS_PID" 2>/dev/null; do
	awk '/VmRSS/ { print $2 }' "/proc/$FS_PID/status" 2>/dev/null
	sleep 0.2
done) >"$T/rss" &
SAMPLER=$!

# --- context switches --------------------------------------------------
# The daemon's threads come and go (libfuse ends idle workers), and a
# thread that ended took its count out of /proc: perf counts every thread
# of the daemon, those that end included, between cs_begin and cs_end.
# Without perf, the threads alive at both ends are summed from /proc and
# the figure gets a "+" (a lower bound) if one of them ended.
PERF_OK=0
if command -v perf >/dev/null &&
	perf stat -e context-switches -x, -o /dev/null -p "$FS_PID" -- sleep 0.01 2>/dev/null; then
	PERF_OK=1
fi
# task_cs PID: "tid switches" for every thread alive now
task_cs() {
	awk 'FNR == 1 { n = split(FILENAME, a, "/"); tid = a[n - 1] }
	     /^(non)?voluntary_ctxt_switches/ { s[tid] += $2 }
	     END { for (t in s) print t, s[t] }' /proc/"$1"/task/*/status 2>/dev/null
}
# cs_begin PID: start counting the switches of PID's threads (untimed)
cs_begin() {
	CS_PID=$1
	if [ "$PERF_OK" = 1 ]; then
		rm -f "$T/ctl" "$T/ack"
		mkfifo "$T/ctl" "$T/ack"
		perf stat -e context-switches -x, -o "$T/perf.out" -D -1 \
			--control "fifo:$T/ctl,$T/ack" -p "$1" 2>/dev/null &
		PERF_PID=$!
		exec {ACK_FD}<"$T/ack" {CTL_FD}>"$T/ctl"
		echo enable >&"$CTL_FD"
		read -r -u "$ACK_FD" _ || die "perf stat did not start"
	else
		task_cs "$1" >"$T/cs0"
	fi
}
# cs_end: the switches since cs_begin, in CS (not in a subshell: perf
# stat is a child of this shell, waited for so that its output is whole)
cs_end() {
	if [ "$PERF_OK" = 1 ]; then
		echo disable >&"$CTL_FD"
		read -r -u "$ACK_FD" _
		kill -INT "$PERF_PID"
		wait "$PERF_PID"
		exec {ACK_FD}<&- {CTL_FD}>&-
		CS=$(awk -F, '$3 ~ /^context-switches/ { v = $1 } END { print (v ~ /^[0-9]+$/) ? v : "?" }' \
			"$T/perf.out")
		[ "$CS" != "?" ] || die "perf stat counted nothing: $(cat "$T/perf.out")"
		return
	fi
	task_cs "$CS_PID" >"$T/cs1"
	CS=$(awk 'NR == FNR { b[$1] = $2; next }
	     { d += $2 - (($1 in b) ? b[$1] : 0); seen[$1] = 1 }
	     END { for (t in b) if (!(t in seen)) lost = 1; printf "%d%s\n", d, lost ? "+" : "" }' \
		"$T/cs0" "$T/cs1")
}
# ru_cs FILE: voluntary + involuntary switches that rusage_run wrote
ru_cs() { awk '{ print $1 + $2 }' "$1"; }
# ru_cpu FILE: user + system CPU microseconds that rusage_run wrote
ru_cpu() { awk '{ print $4 + $5 }' "$1"; }
# ceil_cs KEY...: the sum of /stats fields of the ceiling
ceil_cs() {
	local keys=" $* "
	awk -v k="$keys" 'index(k, " " $1 " ") { s += $2 } END { print s + 0 }' "$CMNT/stats"
}

# Every path prints "NS CLIENT_CS SERVER_CS SERVER_CPU_US" ("-" where
# nothing is counted; the CPU is vdi exec's, user + system).
n=0
# fs_backup MNT DAEMON NDEV [tar|gen]: backup of db through the mount into
# NDEV x dd of=/dev/null, or one cat of SET/SET.tar; gen: the database is
# vdi exec --generate's (a source that costs no read: the client path alone)
fs_backup() {
	local m=$1 pid=$2 ndev=$3 tar=${4:-} s devs k vds t0 t1 pids=() spid gen=()
	[ "$tar" = gen ] && gen=(--generate "$BYTES") && tar=
	n=$((n + 1))
	s=$TAG-$n
	printf 'devices=%s\n' "$ndev" >"$m/.config/$s"
	mkdir "$m/$s" || die "mkdir"
	devs=("$s")
	for k in $(seq 1 $((ndev - 1))); do devs+=("$s$k"); done
	vds=$(printf "VIRTUAL_DEVICE='%s', " "${devs[@]}")
	cs_begin "$pid"
	t0=$(now)
	"$RU" "$T/ru.exec" "$VDI" exec -q "${gen[@]}" "BACKUP DATABASE db TO ${vds%, } WITH $WITH" &
	spid=$!
	if [ -n "$tar" ]; then
		cat "$m/$s/$s.tar" >/dev/null || die "tar reader failed"
	else
		for k in "${devs[@]}"; do
			dd if="$m/$s/$k" of=/dev/null bs=1M 2>"$T/dd.$k" &
			pids+=($!)
		done
		for k in "${pids[@]}"; do wait "$k" || die "backup reader failed"; done
	fi
	wait "$spid" || die "backup server failed"
	t1=$(now)
	cs_end
	# 1 device: the rate .status says (MB/s) and dd's own (bytes / its seconds)
	local rates="- -"
	if [ "$ndev" = 1 ] && [ -z "$tar" ]; then
		rates="$(awk '$1 == "rate:" { print $2 }' "$m/$s/.status") $(awk '/ copied, / {
			for (i = 1; i <= NF; i++) if ($i == "s,") printf "%.1f", $1 / $(i - 1) / 1e6 }' "$T/dd.$s")"
	fi
	rmdir "$m/$s"
	rm -f "$m/.config/$s"
	echo "$((t1 - t0)) $CS $(ru_cs "$T/ru.exec") $(ru_cpu "$T/ru.exec") $rates"
}

# fs_restore MNT DAEMON: restore from bak through the mount, written by dd bs=1M
fs_restore() {
	local m=$1 pid=$2 s t0 t1 spid
	n=$((n + 1))
	s=$TAG-$n
	mkdir "$m/$s" || die "mkdir"
	rm -f "$VDI_DATA_DIR/r.mdf"
	cs_begin "$pid"
	t0=$(now)
	"$RU" "$T/ru.exec" "$VDI" exec -q "RESTORE DATABASE r FROM VIRTUAL_DEVICE='$s' WITH $WITH" &
	spid=$!
	dd if="$T/bak" of="$m/$s/$s" bs=1M status=none || die "restore writer failed"
	wait "$spid" || die "restore server failed"
	t1=$(now)
	cs_end
	rmdir "$m/$s"
	echo "$((t1 - t0)) $CS $(ru_cs "$T/ru.exec") $(ru_cpu "$T/ru.exec")"
}

# pipe_backup: the same backup through `vdi pipe` into dd of=/dev/null
pipe_backup() {
	local s t0 t1 spid
	n=$((n + 1))
	s=$TAG-$n
	t0=$(now)
	"$RU" "$T/ru.pipe" "$VDI" pipe -q -R -s "$s" | dd of=/dev/null bs=1M status=none &
	spid=$!
	"$RU" "$T/ru.exec" "$VDI" exec -q "BACKUP DATABASE db TO VIRTUAL_DEVICE='$s' WITH $WITH" ||
		die "pipe backup server failed"
	wait "$spid" || die "vdi pipe failed"
	t1=$(now)
	echo "$((t1 - t0)) $(ru_cs "$T/ru.pipe") $(ru_cs "$T/ru.exec") $(ru_cpu "$T/ru.exec")"
}

pipe_restore() {
	local s t0 t1 spid
	n=$((n + 1))
	s=$TAG-$n
	rm -f "$VDI_DATA_DIR/r.mdf"
	t0=$(now)
	dd if="$T/bak" bs=1M status=none | "$RU" "$T/ru.pipe" "$VDI" pipe -q -s "$s" &
	spid=$!
	"$RU" "$T/ru.exec" "$VDI" exec -q "RESTORE DATABASE r FROM VIRTUAL_DEVICE='$s' WITH $WITH" ||
		die "pipe restore server failed"
	wait "$spid" || die "vdi pipe restore failed"
	t1=$(now)
	echo "$((t1 - t0)) $(ru_cs "$T/ru.pipe") $(ru_cs "$T/ru.exec") $(ru_cpu "$T/ru.exec")"
}

plain_pipe() { # FILE: dd | dd of the same bytes
	local t0 t1
	t0=$(now)
	dd if="$1" bs=1M status=none | dd of=/dev/null bs=1M status=none
	t1=$(now)
	echo "$((t1 - t0)) - - -"
}

dd_db() { # the file source alone: the database read as the server reads it
	local t0 t1
	t0=$(now)
	dd if="$VDI_DATA_DIR/db.mdf" of=/dev/null bs=1M status=none || die "dd of db.mdf failed"
	t1=$(now)
	echo "$((t1 - t0)) - - -"
}

# dd_write: the restore's own cost, the backup written into a new file:
# r.mdf, removed just before as before a restore (no more memory than the
# restores take, and the same pages: on a VM with free page reporting, as
# this one, memory freed seconds ago has gone back to the host and costs a
# fault per page to take again, memory freed just now does not).
dd_write() {
	local t0 t1
	rm -f "$VDI_DATA_DIR/r.mdf"
	t0=$(now)
	dd if="$T/bak" of="$VDI_DATA_DIR/r.mdf" bs=1M status=none || die "dd into r.mdf failed"
	t1=$(now)
	echo "$((t1 - t0)) - - -"
}

# The ceiling: its daemon's switches are the client side, its helper's
# (producer or drainer) the server side.
ceil_read() {
	local t0 t1 d0 h0
	d0=$(ceil_cs ctxsw_daemon) h0=$(ceil_cs ctxsw_producer)
	t0=$(now)
	dd if="$CMNT/read" of=/dev/null bs=1M count="$MIB" status=none || die "ceiling read failed"
	t1=$(now)
	echo "$((t1 - t0)) $(($(ceil_cs ctxsw_daemon) - d0)) $(($(ceil_cs ctxsw_producer) - h0)) -"
}

ceil_write() { # timed until the drainer took the last byte (/stats waits)
	local t0 t1 d0 h0
	d0=$(ceil_cs ctxsw_daemon) h0=$(ceil_cs ctxsw_drainer)
	t0=$(now)
	dd if=/dev/zero of="$CMNT/write" bs=1M count="$MIB" status=none || die "ceiling write failed"
	cat "$CMNT/stats" >"$T/cstats" || die "ceiling stats failed"
	t1=$(now)
	echo "$((t1 - t0)) $(($(ceil_cs ctxsw_daemon) - d0)) $(($(ceil_cs ctxsw_drainer) - h0)) -"
}

# best VAR "NS C S": keep in VAR the measurement with the smaller time
# (and in WORST the longest time, to show how much the rounds differ)
declare -A BEST WORST
best() {
	local cur=${BEST[$1]:-} worst=${WORST[$1]:-}
	if [ -z "$cur" ] || [ "${2%% *}" -lt "${cur%% *}" ]; then BEST[$1]=$2; fi
	if [ -z "$worst" ] || [ "${2%% *}" -gt "$worst" ]; then WORST[$1]=${2%% *}; fi
}
# measure VAR FUNCTION ARGS...: run one path of a round, keep the best
measure() {
	local v=$1 r
	shift
	r=$("$@") || exit 1
	[ -n "${BENCH_VERBOSE:-}" ] && echo "round $ROUND $v: ${r%% *} ns, cs ${r#* }" >&2
	best "$v" "$r"
}

# scale: once, after the rounds, a BENCH_SCALE_MIB (default 8192, 0: none)
# backup through 1 device (generated source: no database file that size)
# and a restore of that size (its stream made on the fly: a generated
# backup through `vdi pipe -R` into dd of the device file), with the
# daemon's RSS sampled: it must stay flat whatever the size.  One round,
# rates for information only.
scale() {
	local smib=${BENCH_SCALE_MIB:-8192} sbytes s t0 t1 t2 p1 p2 hwm0 hwm1 avail sp
	[ "$smib" = 0 ] && return
	sbytes=$((smib * 1024 * 1024))
	rm -f "$VDI_DATA_DIR/r.mdf"
	avail=$(awk '/^MemAvailable/ { print int($2 / 1024) }' /proc/meminfo)
	if [ "$(stat -f -c %T "$T")" = tmpfs ] && [ $((smib + 1024)) -ge $((avail * 9 / 10)) ]; then
		echo "scale rows skipped: the ${smib} MiB restored database needs that much of TMPDIR (tmpfs) and $avail MiB are available"
		return
	fi
	hwm0=$(awk '/VmHWM/ { print $2 }' "/proc/$FS_PID/status")
	(while kill -0 "$FS_PID" 2>/dev/null; do
		awk '/VmRSS/ { print $2 }' "/proc/$FS_PID/status" 2>/dev/null
		sleep 0.2
	done) >"$T/rss.scale" &
	sp=$!
	s=$TAG-scale-b
	mkdir "$MNT/$s" || die "mkdir"
	t0=$(now)
	"$VDI" exec -q --generate "$sbytes" "BACKUP DATABASE db TO VIRTUAL_DEVICE='$s' WITH $WITH" &
	p1=$!
	dd if="$MNT/$s/$s" of=/dev/null bs=1M status=none || die "scale backup reader failed"
	wait "$p1" || die "scale backup server failed"
	t1=$(now)
	rmdir "$MNT/$s"
	s=$TAG-scale-r
	mkdir "$MNT/$s" || die "mkdir"
	"$VDI" pipe -q -R -s "$s-src" | dd of="$MNT/$s/$s" bs=1M status=none &
	p1=$!
	"$VDI" exec -q --generate "$sbytes" "BACKUP DATABASE db TO VIRTUAL_DEVICE='$s-src' WITH $WITH" &
	p2=$!
	"$VDI" exec -q "RESTORE DATABASE r FROM VIRTUAL_DEVICE='$s' WITH $WITH" || die "scale restore failed"
	wait "$p2" || die "scale restore's source backup failed"
	wait "$p1" || die "scale restore writer failed"
	t2=$(now)
	rmdir "$MNT/$s"
	[ "$(stat -c %s "$VDI_DATA_DIR/r.mdf")" = "$sbytes" ] || die "scale restore: r.mdf is not $sbytes bytes"
	rm -f "$VDI_DATA_DIR/r.mdf"
	kill "$sp" 2>/dev/null
	wait "$sp" 2>/dev/null
	hwm1=$(awk '/VmHWM/ { print $2 }' "/proc/$FS_PID/status")
	awk -v b="$sbytes" -v m="$smib" -v a="$t0" -v z="$t1" 'BEGIN {
		printf "scale: %d MiB backup, 1 device, generated source -> dd: %.0f MB/s, %.2f s\n", m, b / ((z - a) / 1e9) / 1e6, (z - a) / 1e9 }'
	awk -v b="$sbytes" -v m="$smib" -v a="$t1" -v z="$t2" 'BEGIN {
		printf "scale: %d MiB restore, dd of=device (stream from vdi pipe): %.0f MB/s, %.2f s\n", m, b / ((z - a) / 1e9) / 1e6, (z - a) / 1e9 }'
	echo "scale: daemon RSS while streaming $(sort -n "$T/rss.scale" | awk 'NF { print; exit }')..$(sort -n "$T/rss.scale" | tail -n 1) kB, peak (VmHWM) $hwm0 kB before the scale rows, $hwm1 kB after"
}

# A backup file to restore from (and to measure the plain pipe on).
s=$TAG-bak
"$VDI" pipe -q -R -s "$s" >"$T/bak" &
spid=$!
"$VDI" exec -q "BACKUP DATABASE db TO VIRTUAL_DEVICE='$s' WITH $WITH" || die "backup to file failed"
wait "$spid" || die "vdi pipe to file failed"
BAKBYTES=$(stat -c %s "$T/bak")
cat "$T/bak" >/dev/null

# The ceiling serves what its producer wrote: the 64-bit word at stream
# offset o holds o, so consecutive words differ by 8.
dd if="$CMNT/read" bs=1M count=4 status=none | od -An -v -t u8 -w8 |
	awk 'NR > 1 && $1 != prev + 8 { bad = 1; exit } { prev = $1 } END { exit bad || NR < 2 }' ||
	die "the ceiling's /read does not carry its producer's pattern"

echo "vdifs benchmark: database ${MIB} MiB (${BENCH_DB:-filled}), backup ${BAKBYTES} bytes, $WITH"
echo "best of $REPS rounds (each round runs every path once); worst: MB/s of the slowest round;"
echo "exec CPU: user + system seconds of vdi exec in the best round, and their share of its time;"
echo "cs/MiB: context switches per MiB of the best round, client + server"
for ROUND in $(seq "$REPS"); do
	measure plain plain_pipe "$T/bak"
	measure ceilr ceil_read
	measure ceilw ceil_write
	measure dddb dd_db
	measure ddw dd_write
	measure fs1 fs_backup "$MNT" "$FS_PID" 1
	measure fsg fs_backup "$MNT" "$FS_PID" 1 gen
	measure fs4 fs_backup "$MNT" "$FS_PID" 4
	measure fs16 fs_backup "$MNT" "$FS_PID" 16
	measure tar4 fs_backup "$MNT" "$FS_PID" 4 tar
	measure vp pipe_backup
	measure fsr fs_restore "$MNT" "$FS_PID"
	measure vpr pipe_restore
	if [ "$HAVE_SQLVDI" = 1 ]; then
		measure sq1 fs_backup "$SMNT" "$SFS_PID" 1
		measure sqr fs_restore "$SMNT" "$SFS_PID"
	fi
done
kill "$SAMPLER" 2>/dev/null
SAMPLER=
hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$FS_PID/status")
rss_min=$(sort -n "$T/rss" | awk 'NF { print; exit }')
rss_max=$(sort -n "$T/rss" | tail -n 1)

# The ceiling moved what it was given, each request 1 MiB.
cat "$CMNT/stats" >"$T/cstats"
stat_of() { awk -v k="$1" '$1 == k { print $2 }' "$T/cstats"; }
if [ "$(stat_of write_bytes)" != $((REPS * BYTES)) ] || [ "$(stat_of drained_bytes)" != $((REPS * BYTES)) ] ||
	[ "$(stat_of drained_sum)" != 0 ]; then
	die "the ceiling's drainer did not get every byte written: $(tr '\n' ' ' <"$T/cstats")"
fi
if [ "$(stat_of read_max)" != 1048576 ] || [ "$(stat_of write_max)" != 1048576 ]; then
	die "the ceiling did not see 1 MiB requests: $(tr '\n' ' ' <"$T/cstats")"
fi

# bytes of each path
declare -A BYTES_OF=([ceilr]=$BYTES [ceilw]=$BYTES [dddb]=$BYTES)
bytes() { echo "${BYTES_OF[$1]:-$BAKBYTES}"; }
# rate VAR: MB/s of the best round
rate() {
	local m=${BEST[$1]:-}
	[ -n "$m" ] || { echo "-"; return; }
	awk -v b="$(bytes "$1")" -v ns="${m%% *}" 'BEGIN { printf "%.0f", b / (ns / 1e9) / 1e6 }'
}
# cs VAR: "total (client + server)" switches per MiB of the best round
cs() {
	local m=${BEST[$1]:-} c s
	[ -n "$m" ] || { echo "-"; return; }
	c=$(echo "$m" | cut -d' ' -f2) s=$(echo "$m" | cut -d' ' -f3)
	[ "$c" = - ] && { echo "-"; return; }
	awk -v c="$c" -v s="$s" -v b="$(bytes "$1")" 'BEGIN {
		mib = b / 1048576; lb = (c ~ /\+$/) ? "+" : ""
		printf "%.2f%s (%.2f%s + %.2f)", (c + s) / mib, lb, c / mib, lb, s / mib }'
}
# cpu VAR: vdi exec's CPU seconds in the best round, and their share of the time
cpu() {
	local m=${BEST[$1]:-} u
	u=$(echo "$m" | cut -d' ' -f4)
	if [ -z "$u" ] || [ "$u" = - ]; then
		echo "-"
		return
	fi
	awk -v u="$u" -v ns="${m%% *}" 'BEGIN { printf "%.2f s %3.0f%%", u / 1e6, u / 1e6 / (ns / 1e9) * 100 }'
}
row() { # LABEL VAR
	local m=${BEST[$2]:-}
	if [ -z "$m" ]; then
		printf '%-52s %s\n' "$1" "skipped (no $SQLVDI)"
		return
	fi
	printf '%-52s %6s MB/s %6.2f s %6s %12s  %s\n' "$1" "$(rate "$2")" \
		"$(awk -v ns="${m%% *}" 'BEGIN { print ns / 1e9 }')" \
		"$(awk -v b="$(bytes "$2")" -v ns="${WORST[$2]}" 'BEGIN { printf "%.0f", b / (ns / 1e9) / 1e6 }')" \
		"$(cpu "$2")" "$(cs "$2")"
}
printf '%-52s %11s %8s %6s %12s  %s\n' "path" "rate" "time" "worst" "exec CPU" "cs/MiB (client + server)"
row "plain pipe: dd if=bak bs=1M | dd of=/dev/null" plain
row "FUSE ceiling read: dd if=ceiling bs=1M count=$MIB" ceilr
row "FUSE ceiling write: dd if=/dev/zero of=ceiling bs=1M" ceilw
row "dd if=db.mdf of=/dev/null bs=1M (file source)" dddb
row "dd if=bak of=new file bs=1M (a restore's write)" ddw
row "vdi pipe backup | dd of=/dev/null" vp
row "vdifs backup, 1 device -> dd of=/dev/null" fs1
row "vdifs backup, 1 device, generated source -> dd" fsg
row "vdifs backup, 4 devices -> 4 x dd" fs4
row "vdifs backup, 16 devices -> 16 x dd" fs16
row "vdifs backup, 4 devices -> cat SET.tar" tar4
row "vdifs sqlvdi backup, 1 device -> dd" sq1
row "vdi pipe restore (dd | vdi pipe)" vpr
row "vdifs restore, dd of=device bs=1M" fsr
row "vdifs sqlvdi restore, dd of=device bs=1M" sqr
# ratio A B: rate of A / rate of B ("-" if either is missing)
ratio() {
	local a b
	a=$(rate "$1") b=$(rate "$2")
	if [ "$a" = - ] || [ "$b" = - ]; then echo "-"; else awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }'; fi
}
echo "ratios (rate of the path / rate of the baseline, best rounds; goal in brackets):"
echo "  generated source, backup 1 device / backup ceiling: $(ratio fsg ceilr)   [>= 0.8]"
echo "  backup 1 device  / backup ceiling: $(ratio fs1 ceilr)"
echo "  restore          / restore ceiling: $(ratio fsr ceilw)   [>= 0.6]"
echo "  backup 4 devices / backup 1 device: $(ratio fs4 fs1)   [>= 1.0]"
echo "  file source, backup 1 device / dd of db: $(ratio fs1 dddb)   [>= 0.8]"
echo "  sqlvdi backup    / libvdi backup: $(ratio sq1 fs1)   [>= 0.95]"
echo "  sqlvdi restore   / libvdi restore: $(ratio sqr fsr)   [>= 0.95]"
echo "  backup 16 devices / backup 1 device: $(ratio fs16 fs1)"
echo "  tar, 4 devices   / 4 parallel readers: $(ratio tar4 fs4)"
echo "  restore          / dd of bak into a new file: $(ratio fsr ddw)"
echo "  backup 1 device  / plain pipe: $(ratio fs1 plain)   [>= 1.3]"
echo "  backup 4 devices / plain pipe: $(ratio fs4 plain)"
echo "  backup 1 device  / vdi pipe:   $(ratio fs1 vp)"
echo "  restore          / plain pipe: $(ratio fsr plain)   [>= 0.8]"
echo "  restore          / vdi pipe:   $(ratio fsr vpr)"
echo "daemon RSS: peak ${hwm} kB, samples while streaming ${rss_min}..${rss_max} kB"
# .status against dd, the best round of the 1-device backup
st_rate=$(echo "${BEST[fs1]}" | cut -d' ' -f5) dd_rate=$(echo "${BEST[fs1]}" | cut -d' ' -f6)
echo ".status rate / dd's rate, backup 1 device: $(awk -v a="$st_rate" -v b="$dd_rate" 'BEGIN {
	if (b + 0 > 0) printf "%.3f", a / b; else print "-" }') (.status $st_rate MB/s, dd $dd_rate MB/s)   [0.95..1.05]"
scale
