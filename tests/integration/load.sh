#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# load.sh - issue 5 item 4: 32 sets x 4 devices at once for a bounded
# time, random database sizes and options, through `vdi pipe` and a vdifs
# mount (mixed: a backup through one, its restore through either), every
# restored database compared byte for byte with the original, and no
# growth of the vdifs daemon's memory, open files, threads or mappings
# across the run.
#
# Each of the NSETS workers loops: make a database of a random size (0,
# around the 512-byte block and the 1 MiB chunk, or random up to
# VDI_LOAD_MAX_BYTES), BACKUP it over 4 devices with random BLOCKSIZE,
# MAXTRANSFERSIZE and BUFFERCOUNT (buffers at most 16 MiB per set) through
# a random transport (vdi pipe with or without -R, or the mount with a
# random per-set .config and random readers cat/dd/cp), then RESTORE it
# with other random options through a random transport with the stripes
# in a random order, and cmp.  A warm-up round (every worker through the
# mount at once, so the daemon sees all sets together) comes first; the
# daemon is sampled (/proc/PID/status VmRSS, Threads; /proc/PID/fd;
# /proc/PID/maps) when idle after it and again when idle at the end.
#
# The load runs in two halves with the daemon idle in between.
# Tolerances (growth from the warm-up to the end, daemon idle both times):
#   open fds  0            every set's fds are closed when it is removed
#   threads   0            (libfuse keeps its idle workers)
#   mappings  10           glibc keeps the stacks of exited threads (up
#             to 40 MiB: 5 stacks of 8 MiB, 2 mappings each) and the
#             peak thread count differs from run to run; a buffer area
#             left mapped would add one per set, hundreds per run
#   VmRSS     VDI_LOAD_RSS_TOLERANCE_KB, default 8192 KiB, from the
#             warm-up to the end and within the second half.  The daemon
#             runs with MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=131072,
#             so that its RSS follows its live memory: with glibc's
#             defaults the dynamic mmap threshold moves libfuse's freed
#             1 MiB request buffers into per-thread arenas that keep them,
#             and the idle RSS crept up ~3 MiB per 30 s of this load (24 ->
#             30 -> 33 MiB) with no leak (an ASan/LSan build of the daemon
#             reports none).  With both settings the idle RSS stays at 5-12
#             MiB: across clean 60 s runs it moved by -2.4 to +3.4 MiB (the
#             peak of threads and heap fragmentation), while a leak of
#             4 KiB per mkdir injected into vdifs grew it by 5 MiB: this
#             check catches leaks of ~8 KiB or more per set (a buffer, a
#             set's state); smaller ones are LeakSanitizer's: run this
#             script with a SANITIZE=address build and
#             VDI_LOAD_MALLOC_DEFAULT=1 (the log is checked for sanitizer
#             reports).  VDI_LOAD_MALLOC_DEFAULT=1 keeps glibc's defaults
#             (or a sanitizer's allocator) and reports the growth of RSS
#             and mappings without checking it.
#
# Environment: VDI_LOAD_SECONDS (60) how long new rounds start,
# VDI_LOAD_SETS (32), VDI_LOAD_MAX_BYTES (6 MiB), VDI_LOAD_SEED (random,
# printed: the options of every round are a function of it).
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) BDIR=$BUILD ;; *) BDIR=$ROOT/$BUILD ;; esac
VDI=$BDIR/vdi
VDIFS=$BDIR/vdifs
SECS=${VDI_LOAD_SECONDS:-60}
NSETS=${VDI_LOAD_SETS:-32}
MAXB=${VDI_LOAD_MAX_BYTES:-$((6 * 1048576))}
SEED=${VDI_LOAD_SEED:-$((($$ * 7919 + $(date +%s)) % 1000000))}
RSS_TOL=${VDI_LOAD_RSS_TOLERANCE_KB:-8192}
MAPS_TOL=10
NDEV=4
TO=180 # bound of every single command (seconds)
TAG=load-$$
T=$(mktemp -d "${TMPDIR:-/tmp}/vdi-load.XXXXXX")
MNT=$T/mnt
FS_PID=
SAMPLER=
WPIDS=()
FAILED=0

NAME=load
. "$(dirname "$0")/report.bash"

cleanup() {
	local p i
	trap - EXIT INT TERM
	for p in "${WPIDS[@]+"${WPIDS[@]}"}"; do
		kill -0 "$p" 2>/dev/null && kill_tree "$p"
	done
	[ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
	for p in "${WPIDS[@]+"${WPIDS[@]}"}" $SAMPLER; do wait "$p" 2>/dev/null; done
	if mountpoint -q "$MNT" 2>/dev/null; then
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null
	fi
	if [ -n "$FS_PID" ]; then
		for i in $(seq 200); do kill -0 "$FS_PID" 2>/dev/null || break; sleep 0.05; done
		if kill -0 "$FS_PID" 2>/dev/null; then
			fail "vdifs (pid $FS_PID) still running 10 s after unmount"
			kill -9 "$FS_PID" 2>/dev/null
		fi
		wait "$FS_PID" 2>/dev/null
	fi
	# a sanitizer build reports into the daemon's log
	if grep -Eq "Sanitizer|runtime error" "$T/vdifs.log" 2>/dev/null; then
		fail "sanitizer report in the vdifs log"
		grep -E -A30 'Sanitizer|runtime error' "$T/vdifs.log" | head -n 60 >&2
	fi
	report_end "$(ls /dev/shm 2>/dev/null | grep -F ".$TAG-" || true)"
}
trap cleanup EXIT
trap 'fail "interrupted"; exit 1' INT TERM

[ -x "$VDI" ] && [ -x "$VDIFS" ] || { fail "build $VDI and $VDIFS first"; exit 1; }

# ------------------------------------------------------------ the worker

# Every random choice goes through rnd/pick in the worker's own shell:
# bash reseeds RANDOM in each subshell, so a $(...) would not follow the
# seed.
# rnd N: R = a random number in [0, N)
rnd() { R=$(((RANDOM * 32768 + RANDOM) % $1)); }
# pick WORD...: P = one of the words
pick() { rnd $#; shift $R; P=$1; }

# random_with [BLOCKSIZE]: WITH = a random WITH clause (maybe empty);
# buffers <= 16 MiB; WBS = the block size it implies.  With an argument
# (a restore) BLOCKSIZE is that one or left out: spec 4.1.
random_with() {
	local opts=() bs mts
	WITH=
	WBS=512
	rnd 8
	[ $R -eq 0 ] && return 0 # all defaults
	rnd 8
	bs=${1:-$((512 << R))}
	pick 1 1 2 3 4 8 16 64
	mts=$((65536 * P))
	rnd 4
	[ $R -gt 0 ] && opts+=("BLOCKSIZE=$bs") && WBS=$bs
	rnd 4
	if [ $R -gt 0 ]; then
		opts+=("MAXTRANSFERSIZE=$mts")
	else
		mts=65536
	fi
	rnd 4
	if [ $R -gt 0 ] || [ "$mts" -gt 1048576 ]; then
		rnd $((16777216 / mts < 24 ? 16777216 / mts : 24))
		opts+=("BUFFERCOUNT=$((1 + R))")
	fi
	[ ${#opts[@]} -eq 0 ] && return 0
	local IFS=,
	WITH="WITH ${opts[*]}"
}

# random_size: SIZE = 0, around a block or a chunk, or up to MAXB
random_size() {
	rnd 10
	case $R in
	0) pick 0 1 511 512 513 && SIZE=$P ;;
	1) pick 1048575 1048576 1048577 $((4 * 1048576)) $((4 * 1048576 + 512)) && SIZE=$P ;;
	*) rnd $((MAXB + 1)) && SIZE=$R ;;
	esac
}

# make_db FILE SIZE ID: SIZE bytes, unique per ID, from the random pool
make_db() {
	rnd $((8 * 1048576))
	if [ "$2" -lt 16 ]; then
		head -c "$2" "$T/pool" >"$1"
	else
		{
			printf '%016d' "$3"
			dd if="$T/pool" bs=65536 iflag=skip_bytes,count_bytes \
				skip=$R count=$(($2 - 16)) status=none
		} >"$1"
	fi
}

# devs SET -> "VIRTUAL_DEVICE='SET', VIRTUAL_DEVICE='SET1', ..."
devs() {
	local s="VIRTUAL_DEVICE='$1'" i
	for ((i = 1; i < NDEV; i++)); do s="$s, VIRTUAL_DEVICE='$1$i'"; done
	echo "$s"
}

# wlog MSG: a failure of this worker (kept in its own file)
wlog() { printf '%s\n' "$*" >>"$WD/fail"; }

# xfer_pipe SET DIR STMT FILE...: vdi pipe + vdi exec; 0 when both succeed
xfer_pipe() {
	local set=$1 stmt=$3 p e c popt
	shift 3
	pick "" "" -R
	popt=$P
	timeout -k 5 $TO "$VDI" pipe -q -s "$set" -n $NDEV -t 60000 $popt "$@" 2>"$WD/pipe.err" &
	p=$!
	timeout -k 5 $TO "$VDI" exec -q -D "$WD" -t 60000 "$stmt" 2>"$WD/exec.err"
	e=$?
	wait $p
	c=$?
	[ $e -eq 0 ] && [ $c -eq 0 ] && return 0
	wlog "pipe $set: exec exit $e, pipe$popt exit $c: $stmt: $(cat "$WD/exec.err" "$WD/pipe.err" | head -n 4)"
	return 1
}

# set_done SET: remove a set of the mount, right after its server and
# its readers or writers exited.  vdifs waits for the RELEASE that comes
# after close(2) returned, so one rmdir must do; a set still busy is
# aborted and counts as a failure.
set_done() {
	local s=$1
	rmdir "$MNT/$s" 2>/dev/null && { rm -f "$MNT/.config/$s"; return 0; }
	wlog "rmdir $s: busy after its server and its readers/writers ended: $(sed -n 's/^last-error: //p' "$MNT/.status")"
	echo abort >"$MNT/$s/.control" 2>/dev/null
	rmdir "$MNT/$s" 2>/dev/null
	rm -f "$MNT/.config/$s"
	return 1
}

# xfer_fs SET DIR STMT FILE...: the set through the mount; DIR r (the
# files are read from the devices: backup) or w (restore)
xfer_fs() {
	local set=$1 dir=$2 stmt=$3 k e rc=0 dev tool bs pids=() cfg
	shift 3
	pick pipe+complete pipe+complete pipe+nocomplete pipe+discard+complete
	cfg="devices=$NDEV open_timeout=120000 features=$P"
	pick 4096 65536 1048576 4194304
	cfg="$cfg blksize=$P"
	rnd 2
	[ $R -eq 0 ] && printf '%s\n' "$cfg" >"$MNT/.config/$set"
	if ! mkdir "$MNT/$set" 2>"$WD/mkdir.err"; then
		wlog "mkdir $set: $(cat "$WD/mkdir.err")"
		rm -f "$MNT/.config/$set"
		return 1
	fi
	timeout -k 5 $TO "$VDI" exec -q -D "$WD" -t 60000 "$stmt" 2>"$WD/exec.err" &
	e=$!
	k=0
	for f in "$@"; do
		dev=$MNT/$set/$set
		[ $k -gt 0 ] && dev=$dev$k
		pick cat dd cp
		tool=$P
		pick 4k 64k 1M 3M
		bs=$P
		if [ "$dir" = r ]; then
			case $tool in
			cat) timeout -k 5 $TO cat "$dev" >"$f" ;;
			dd) timeout -k 5 $TO dd if="$dev" of="$f" bs=$bs status=none ;;
			cp) timeout -k 5 $TO cp "$dev" "$f" ;;
			esac 2>>"$WD/io.err" &
		else
			case $tool in
			cat) timeout -k 5 $TO cat "$f" >"$dev" ;;
			dd) timeout -k 5 $TO dd if="$f" of="$dev" bs=$bs status=none ;;
			cp) timeout -k 5 $TO cp "$f" "$dev" ;;
			esac 2>>"$WD/io.err" &
		fi
		pids+=($!)
		k=$((k + 1))
	done
	for k in "${pids[@]}"; do wait "$k" || rc=$((rc + 1)); done
	wait $e
	e=$?
	if [ $e -ne 0 ] || [ $rc -ne 0 ]; then
		wlog "fs $set ($cfg): exec exit $e, $rc reader/writer(s) failed: $stmt: $(cat "$WD/exec.err" "$WD/io.err" 2>/dev/null | head -n 4)"
		rc=1
	fi
	: >"$WD/io.err"
	set_done "$set" || rc=1
	return $rc
}

# round W R [fs]: one backup and restore; prints nothing, counts in $WD
round() {
	local w=$1 r=$2 force=${3:-} size s bt rt bw rw files rfiles sz i j f
	s=$TAG-w$w-r$r
	random_size
	size=$SIZE
	make_db "$WD/db.mdf" "$size" $((w * 1000000 + r))
	rm -f "$WD/out.mdf" "$WD"/st.*
	files=("$WD/st.0" "$WD/st.1" "$WD/st.2" "$WD/st.3")
	random_with
	bw=$WITH
	random_with "$WBS"
	rw=$WITH
	pick pipe fs
	bt=${force:-$P}
	pick pipe fs
	rt=${force:-$P}
	# the restore takes the stripes in a random order
	rfiles=("${files[@]}")
	for ((i = ${#rfiles[@]} - 1; i > 0; i--)); do
		rnd $((i + 1))
		j=$R
		f=${rfiles[$i]} && rfiles[$i]=${rfiles[$j]} && rfiles[$j]=$f
	done
	if ! xfer_$bt "$s-b" r "BACKUP DATABASE db TO $(devs "$s-b") $bw" "${files[@]}"; then
		echo "$bt/- $size 0 fail" >>"$WD/stats"
		return 1
	fi
	sz=$(cat "${files[@]}" | wc -c)
	if ! xfer_$rt "$s-x" w "RESTORE DATABASE out FROM $(devs "$s-x") $rw" "${rfiles[@]}"; then
		echo "$bt/$rt $size $sz fail" >>"$WD/stats"
		return 1
	fi
	if ! cmp -s "$WD/db.mdf" "$WD/out.mdf"; then
		wlog "round $r ($bt '$bw' / $rt '$rw', $size bytes): restored database differs"
		echo "$bt/$rt $size $sz fail" >>"$WD/stats"
		return 1
	fi
	echo "$bt/$rt $size $sz ok" >>"$WD/stats"
}

# worker W ROUNDS|DEADLINE MODE: MODE warm = one round through the mount
worker() {
	local w=$1 until=$2 mode=$3 r
	WD=$T/w$w
	mkdir -p "$WD"
	case $mode in
	warm) RANDOM=$((SEED + w * 7)) r=0 ;;
	load1) RANDOM=$((SEED + w * 7 + 1000)) r=1 ;;
	*) RANDOM=$((SEED + w * 7 + 2000)) r=100001 ;;
	esac
	if [ "$mode" = warm ]; then
		round "$w" 0 fs
	else
		while [ "$(date +%s)" -lt "$until" ]; do
			round "$w" "$r"
			r=$((r + 1))
		done
	fi
	rm -f "$WD/db.mdf" "$WD/out.mdf" "$WD"/st.*
	return 0
}

# run_workers MODE UNTIL LIMIT: NSETS workers; waits at most until LIMIT
run_workers() {
	local mode=$1 until=$2 limit=$3 w p alive
	WPIDS=()
	for w in $(seq 0 $((NSETS - 1))); do
		worker "$w" "$until" "$mode" &
		WPIDS+=($!)
	done
	while :; do
		alive=0
		for p in "${WPIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ $alive -eq 0 ] && break
		if [ "$(date +%s)" -ge "$limit" ]; then
			fail "$mode: workers still running at the time limit; killed"
			for p in "${WPIDS[@]}"; do kill_tree "$p"; done
			break
		fi
		sleep 0.5
	done
	for p in "${WPIDS[@]}"; do wait "$p" 2>/dev/null; done
	WPIDS=()
}

# ------------------------------------------------------ daemon sampling

# sample: "rss_kb fds threads maps anon_kb shmem_kb" of the daemon
sample() {
	local st fds maps
	st=$(awk '/^(VmRSS|Threads|RssAnon|RssShmem):/ {v[$1] = $2}
		END {print v["VmRSS:"], v["Threads:"], v["RssAnon:"], v["RssShmem:"]}' "/proc/$FS_PID/status")
	fds=$(ls "/proc/$FS_PID/fd" | wc -l)
	maps=$(wc -l <"/proc/$FS_PID/maps")
	set -- $st
	echo "$1 $fds $2 $maps $3 $4"
}

# idle_wait: until the mount has no set left (at most 10 s), then 1 s
idle_wait() {
	local i
	for i in $(seq 100); do
		[ -z "$(ls "$MNT" 2>/dev/null)" ] && break
		sleep 0.1
	done
	[ -z "$(ls "$MNT")" ] || fail "sets left in the mount: $(ls "$MNT" | head -n 5 | tr '\n' ' ')"
	sleep 1
}

# ------------------------------------------------------------ the run

mkdir -p "$MNT"
head -c $((16 * 1048576)) /dev/urandom >"$T/pool"
if [ "${VDI_LOAD_MALLOC_DEFAULT:-0}" = 1 ]; then
	"$VDIFS" "$MNT" -f -o devices=$NDEV,open_timeout=120000 2>"$T/vdifs.log" &
else
	MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=131072 "$VDIFS" "$MNT" -f -o devices=$NDEV,open_timeout=120000 2>"$T/vdifs.log" &
fi
FS_PID=$!
for i in $(seq 100); do
	mountpoint -q "$MNT" && break
	kill -0 "$FS_PID" 2>/dev/null || break
	sleep 0.05
done
mountpoint -q "$MNT" || { fail "mount vdifs on $MNT: $(cat "$T/vdifs.log")"; exit 1; }

say "seed $SEED, $NSETS sets x $NDEV devices, ${SECS} s, databases up to $MAXB bytes (VDI_LOAD_SEED=$SEED to repeat)"
t0=$(date +%s)
run_workers warm 0 $((t0 + 300))
idle_wait
read -r rss0 fd0 thr0 maps0 anon0 shm0 <<<"$(sample)"
t1=$(date +%s)
say "warm-up: $NSETS sets at once through the mount in $((t1 - t0)) s; daemon idle: VmRSS $rss0 KiB, $fd0 fds, $thr0 threads, $maps0 mappings"

# peak sampling in the background while the load runs
(
	while kill -0 "$FS_PID" 2>/dev/null; do
		sample >>"$T/samples" 2>/dev/null
		sleep 2
	done
) &
SAMPLER=$!
# two halves, the daemon idle between them: memory that the allocator
# keeps after the first half is no leak; a leak grows in both halves
ts=$(date +%s%N)
run_workers load1 $(($(date +%s) + SECS / 2)) $(($(date +%s) + SECS / 2 + 300))
tm=$(date +%s%N)
idle_wait
read -r rssh fdh thrh mapsh anonh shmh <<<"$(sample)"
say "first half: daemon idle: VmRSS $rssh KiB (anon $anonh), $fdh fds, $thrh threads, $mapsh mappings"
tm2=$(date +%s%N)
run_workers load2 $(($(date +%s) + SECS - SECS / 2)) $(($(date +%s) + SECS - SECS / 2 + 300))
te=$(date +%s%N)
kill "$SAMPLER" 2>/dev/null
wait "$SAMPLER" 2>/dev/null
SAMPLER=
idle_wait
read -r rss1 fd1 thr1 maps1 anon1 shm1 <<<"$(sample)"

# ------------------------------------------------------------ results

for f in "$T"/w*/fail; do
	[ -s "$f" ] || continue
	while IFS= read -r l; do fail "${f%/fail}: $l"; done <"$f"
done
cat "$T"/w*/stats >"$T/all" 2>/dev/null
rounds=$(grep -c . "$T/all")
ok=$(grep -c ' ok$' "$T/all")
bad=$((rounds - ok))
dbbytes=$(awk '$4 == "ok" {s += $2} END {printf "%.0f", s}' "$T/all")
stbytes=$(awk '$4 == "ok" {s += $3} END {printf "%.0f", s}' "$T/all")
ms=$(((te - tm2 + tm - ts) / 1000000))
[ "$ms" -gt 0 ] || ms=1
say "load: $rounds rounds ($((rounds * 2)) operations: backup + restore), $ok verified, $bad failed, in $((ms / 1000)).$((ms % 1000 / 100)) s"
for k in pipe/pipe pipe/fs fs/pipe fs/fs; do
	say "  backup/restore $k: $(grep -c "^$k .* ok\$" "$T/all") verified"
done
say "  bytes: $((dbbytes / 1048576)) MiB of databases verified, $(((stbytes * 2) / 1048576)) MiB of stripes streamed (backup + restore), $(((stbytes * 2) / 1048576 * 1000 / ms)) MiB/s all sets together"
if [ -s "$T/samples" ]; then
	say "  daemon under load: VmRSS peak $(sort -n -k1 "$T/samples" | tail -n 1 | cut -d' ' -f1) KiB, fds peak $(sort -n -k2 "$T/samples" | tail -n 1 | cut -d' ' -f2), threads peak $(sort -n -k3 "$T/samples" | tail -n 1 | cut -d' ' -f3)"
fi
say "daemon idle after warm-up:  VmRSS $rss0 KiB (anon $anon0, shmem $shm0), $fd0 fds, $thr0 threads, $maps0 mappings"
say "daemon idle after half one: VmRSS $rssh KiB (anon $anonh, shmem $shmh), $fdh fds, $thrh threads, $mapsh mappings"
say "daemon idle at the end:     VmRSS $rss1 KiB (anon $anon1, shmem $shm1), $fd1 fds, $thr1 threads, $maps1 mappings"
say "VmRSS growth: warm-up -> half one $((rssh - rss0)) KiB, half one -> end $((rss1 - rssh)) KiB (tolerance $RSS_TOL KiB)"

[ "$rounds" -ge "$NSETS" ] || fail "only $rounds rounds ran (at least $NSETS expected)"
[ "$bad" -eq 0 ] || fail "$bad round(s) failed"
[ $((fd1 - fd0)) -le 0 ] || fail "open fds of the daemon grew: $fd0 -> $fd1"
[ $((thr1 - thr0)) -le 0 ] || fail "threads of the daemon grew: $thr0 -> $thr1"
if [ "${VDI_LOAD_MALLOC_DEFAULT:-0}" = 1 ]; then
	say "VDI_LOAD_MALLOC_DEFAULT=1: VmRSS and mappings (the allocator's) reported, not checked"
else
	[ $((maps1 - maps0)) -le $MAPS_TOL ] || fail "mappings of the daemon grew: $maps0 -> $maps1 (tolerance $MAPS_TOL)"
	[ $((rss1 - rss0)) -le "$RSS_TOL" ] || fail "VmRSS of the daemon grew by $((rss1 - rss0)) KiB from the warm-up (tolerance $RSS_TOL KiB)"
	[ $((rss1 - rssh)) -le "$RSS_TOL" ] || fail "VmRSS of the daemon grew by $((rss1 - rssh)) KiB in the second half (tolerance $RSS_TOL KiB)"
fi
[ "$FAILED" -eq 0 ] && say "all $ok round trips verified; no growth of the daemon"
exit 0
