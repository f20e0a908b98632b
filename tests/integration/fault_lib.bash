# SPDX-License-Identifier: MIT
# fault_lib.bash - helpers of tests/integration/fault_matrix.sh (sourced,
# never run: `make check` runs *.sh only).
#
# Everything of a run lives under one private directory $T (mounts, logs,
# data) and its sets are named fm-<pid>-<n>, so concurrent runs never
# collide.  Every process the script starts is recorded in FM_PIDS, every
# mount point in FM_MNTS; the EXIT trap (also reached on INT/TERM/HUP)
# resumes and kills what is left of them, unmounts, removes the run's
# /dev/shm objects and $T.  Processes are killed by pid only, and only if
# their command line still names this run (a recycled pid is left alone).
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) BDIR=$BUILD ;; *) BDIR=$ROOT/$BUILD ;; esac
VDI=$BDIR/vdi
VDIFS=$BDIR/vdifs
NAME=${0##*/}
[ "${VDIFS_BACKEND:-libvdi}" = sqlvdi ] && NAME="$NAME [sqlvdi]"
TAG=fm-$$
T=$(mktemp -d "${TMPDIR:-/tmp}/vdi-faults.XXXXXX")
DATA=$T/data
mkdir -p "$DATA"
FM_PIDS=()
FM_MNTS=()

say() { printf '%s: %s\n' "$NAME" "$*"; }

# Milliseconds (wall clock, no fork).
now_ms() {
	local t=${EPOCHREALTIME/[.,]/}
	echo $((10#$t / 1000))
}

# alive PID: the process exists and is neither a zombie nor dead.
alive() {
	local st
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	st=${st##*) }
	case ${st:0:1} in Z | X | x) return 1 ;; esac
	return 0
}

# ours PID: its command line names this run (guards against pid reuse).
ours() {
	local cmd
	cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
	case $cmd in *"$T"* | *"$TAG"*) return 0 ;; esac
	return 1
}

track() { FM_PIDS+=("$1"); }

# stopped PID: in state T (SIGSTOP).
stopped() {
	local st
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	st=${st##*) }
	[ "${st:0:1}" = T ]
}

# in_openat PID: blocked in openat(2) (x86_64: 257; aarch64: 56).
in_openat() {
	local sc
	sc=$(cut -d' ' -f1 "/proc/$1/syscall" 2>/dev/null) || return 1
	case $(uname -m) in aarch64) [ "$sc" = 56 ] ;; *) [ "$sc" = 257 ] ;; esac
}

# poll_until MS COMMAND...: runs COMMAND every 10 ms until it succeeds;
# 1 after MS milliseconds.
poll_until() {
	local limit=$1 t0
	shift
	t0=$(now_ms)
	until "$@"; do
		[ $(($(now_ms) - t0)) -ge "$limit" ] && return 1
		sleep 0.01
	done
	return 0
}

not_alive() { ! alive "$1"; }
# mounted DIR: in the mount table (mountpoint(1) says no for the dead
# mount of a killed daemon: stat fails with ENOTCONN)
mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/self/mounts; }
not_mounted() { ! mounted "$1"; }

# mount_vdifs MNT LOG OPTIONS: vdifs in the foreground (FS_PID).
# auto_unmount: a daemon killed with SIGKILL takes its mount with it
# (fusermount3 watches the FUSE descriptor), so nothing is left mounted.
mount_vdifs() {
	local mnt=$1 log=$2 opts=$3
	mkdir -p "$mnt"
	FM_MNTS+=("$mnt")
	# VDIFS_BACKEND=sqlvdi: the Microsoft-ABI client backend (fs_sqlvdi.sh)
	[ "${VDIFS_BACKEND:-libvdi}" = sqlvdi ] && opts="$opts,sqlvdi=$BDIR/libsqlvdi.so"
	"$VDIFS" "$mnt" -f -o "auto_unmount,$opts" 2>>"$log" &
	FS_PID=$!
	track "$FS_PID"
	poll_until 5000 mountpoint -q "$mnt"
}

fm_cleanup() {
	local p m
	for p in "${FM_PIDS[@]+"${FM_PIDS[@]}"}"; do
		if alive "$p" && ours "$p"; then
			kill -9 "$p" 2>/dev/null
			kill -CONT "$p" 2>/dev/null
		fi
	done
	for m in "${FM_MNTS[@]+"${FM_MNTS[@]}"}"; do
		if mounted "$m"; then
			fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
		fi
	done
	rm -f /dev/shm/vdi.*."$TAG"-* /dev/shm/vdi-*."$TAG"-*
	rm -rf "$T"
}
trap fm_cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM HUP

[ -x "$VDI" ] && [ -x "$VDIFS" ] || { say "FAIL: build $VDI and $VDIFS first"; exit 1; }
command -v fusermount3 >/dev/null || { say "FAIL: fusermount3 missing"; exit 1; }
