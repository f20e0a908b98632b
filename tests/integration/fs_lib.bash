# SPDX-License-Identifier: MIT
# fs_lib.bash - helpers for tests/integration/fs_*.sh (sourced, never run:
# `make check` runs *.sh only).
#
# Every script mounts vdifs in a private temporary directory, names its
# sets fs-<pid>-<n> (unique per run), and on exit - normal, failure or
# signal - kills what it started, unmounts (fusermount3 -u, then -uz),
# removes its /dev/shm objects and its directory.  Every command that could
# wait runs under `timeout`.  The script's exit status is the number of
# failed checks (0 = pass).
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) BDIR=$BUILD ;; *) BDIR=$ROOT/$BUILD ;; esac
VDIFS=$BDIR/vdifs
VDI=$BDIR/vdi
NAME=${0##*/}
TAG=fs-$$
T=$(mktemp -d "${TMPDIR:-/tmp}/vdifs-test.XXXXXX")
MNT=$T/mnt
DATA=$T/data
mkdir -p "$MNT" "$DATA"
export VDI_DATA_DIR=$DATA
FS_PID=
BG_PIDS=()
FAILED=0
NSET=0
SET=

. "$(dirname "${BASH_SOURCE[0]}")/report.bash"

# VDIFS_BACKEND=sqlvdi runs a script's cases over the Microsoft-ABI client
# backend, with libvdi's own libsqlvdi.so (fs_sqlvdi.sh does this).
BACKEND_OPTS=()
if [ "${VDIFS_BACKEND:-libvdi}" = sqlvdi ]; then
	BACKEND_OPTS=(-o "sqlvdi=$BDIR/libsqlvdi.so")
	NAME="$NAME [sqlvdi]"
fi

fs_mount() { # extra vdifs arguments
	"$VDIFS" "$MNT" -f "${BACKEND_OPTS[@]+"${BACKEND_OPTS[@]}"}" "$@" 2>>"$T/vdifs.log" &
	FS_PID=$!
	local i
	for i in $(seq 100); do
		mountpoint -q "$MNT" && return 0
		kill -0 "$FS_PID" 2>/dev/null || break
		sleep 0.05
	done
	fail "mount of $MNT (vdifs $*)"
	cat "$T/vdifs.log" >&2
	return 1
}

# Waits for pid to exit within $2 seconds; 0 if it did.
wait_gone() {
	local pid=$1 secs=${2:-10} i
	for i in $(seq $((secs * 20))); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.05
	done
	return 1
}

fs_umount() {
	if mountpoint -q "$MNT" 2>/dev/null; then
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null
	fi
	if [ -n "$FS_PID" ]; then
		if ! wait_gone "$FS_PID" 10; then
			fail "vdifs (pid $FS_PID) still running 10 s after unmount"
			kill -9 "$FS_PID" 2>/dev/null
		fi
		wait "$FS_PID" 2>/dev/null
		FS_PID=
	fi
	# a sanitizer build reports into the daemon's log
	if grep -Eq "Sanitizer|runtime error" "$T/vdifs.log" 2>/dev/null; then
		fail "sanitizer report in the vdifs log"
		grep -E -A20 'Sanitizer|runtime error' "$T/vdifs.log" | head -n 40 >&2
		: >"$T/vdifs.log"
	fi
}

bg_track() { BG_PIDS+=("$1"); }

fs_cleanup() {
	local p
	# TERM first: `timeout` passes it on to the command it runs
	for p in "${BG_PIDS[@]+"${BG_PIDS[@]}"}"; do
		kill -TERM "$p" 2>/dev/null
	done
	for p in "${BG_PIDS[@]+"${BG_PIDS[@]}"}"; do
		wait_gone "$p" 2 || kill -9 "$p" 2>/dev/null
	done
	fs_umount
	report_end "$(ls /dev/shm 2>/dev/null | grep -E "^vdi.*\.$TAG-[0-9]+" || true)"
}
trap fs_cleanup EXIT
trap 'fail "interrupted"; exit 1' INT TERM

new_set() { NSET=$((NSET + 1)); SET=$TAG-$NSET; }

# make_db NAME BYTES: a database file of random bytes
make_db() { head -c "$2" /dev/urandom >"$DATA/$1.mdf"; }

# server_start "STATEMENT": runs `vdi exec [EXEC_OPTS]` in the background, SPID
server_start() {
	timeout -k 5 120 "$VDI" exec -q -t 20000 ${EXEC_OPTS:-} "$1" >"$T/server.out" 2>&1 &
	SPID=$!
	bg_track "$SPID"
}

# server_wait: exit status of the last server_start
server_wait() {
	local rc
	wait "$SPID"
	rc=$?
	[ "$rc" -ne 0 ] && sed "s/^/  server: /" "$T/server.out" >&2
	return $rc
}

# status_field SETDIR KEY: a field of the set's .status
status_field() { sed -n "s/^$2: //p" "$1/.status" | head -n 1; }

# same FILE1 FILE2: byte-identical
same() { cmp -s "$1" "$2"; }

# Checks that nothing of this run is left: call at the end of a script.
check_nothing_left() {
	local left
	left=$(ls /dev/shm 2>/dev/null | grep -E "^vdi.*\.$TAG-[0-9]+" || true)
	check "no shared memory left${left:+ ($left)}" test -z "$left"
}

[ -x "$VDIFS" ] && [ -x "$VDI" ] || { say "FAIL: build $VDIFS and $VDI first"; exit 1; }
