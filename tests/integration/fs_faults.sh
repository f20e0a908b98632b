#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# fs_faults.sh - issue 4 items 7 and 8: truth on failure through a vdifs
# mount.  Each case checks the outcome the issue demands:
#   - Ctrl-C while waiting for the server ends the wait at once, the set
#     stays usable; the open timeout gives ETIMEDOUT;
#   - reader killed, reader closing early, writer killed: the server fails;
#   - server killed, server abort: the reader or writer gets EIO and
#     .status says why;
#   - Ctrl-C of a reader blocked mid-stream, abort through .control;
#   - unmount with a server waiting, unmount refused while busy then the
#     daemon stopped: no server waits, nothing is left behind.
. "$(dirname "$0")/fs_lib.bash"

now() { date +%s%N; }
# since T0: milliseconds
ms_since() { echo $((($(now) - $1) / 1000000)); }
# wait_status SETDIR REGEX SECS: until .status matches
wait_status() {
	local i
	for i in $(seq $(($3 * 20))); do
		grep -Eq "$2" "$1/.status" 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}
# server_raw "STATEMENT": vdi exec without a timeout wrapper (SPID is vdi)
server_raw() {
	"$VDI" exec -q -t 20000 "$1" >"$T/server.out" 2>&1 &
	SPID=$!
	bg_track "$SPID"
}
# server_wait_within SECS: exit status of the server, 255 if still running
server_wait_within() {
	if ! wait_gone "$SPID" "$1"; then
		say "  server still running after $1 s"
		kill -9 "$SPID" 2>/dev/null
		wait "$SPID" 2>/dev/null
		return 255
	fi
	wait "$SPID"
}
last_error() { status_field "$1" last-error; }
# restores_identical BACKUP NEW ORIG: BACKUP restored through a fresh set
# into database NEW (removed afterwards) is identical to database ORIG
restores_identical() {
	local rc
	new_set
	mkdir "$MNT/$SET"
	rm -f "$DATA/$2.mdf"
	server_start "RESTORE DATABASE $2 FROM VIRTUAL_DEVICE='$SET'"
	timeout 30 cp "$1" "$MNT/$SET/$SET"
	server_wait && same "$DATA/$2.mdf" "$DATA/$3.mdf"
	rc=$?
	rmdir "$MNT/$SET"
	rm -f "$DATA/$2.mdf"
	return $rc
}

fs_mount -o open_timeout=30000 || exit 1
make_db big $((48 * 1024 * 1024 + 777))
make_db small 300000
STALL="BUFFERCOUNT=4, MAXTRANSFERSIZE=1048576, FAULT_STALL=30000"

# A backup of small to restore from.
new_set
mkdir "$MNT/$SET"
server_start "BACKUP DATABASE small TO VIRTUAL_DEVICE='$SET'"
timeout 30 cp "$MNT/$SET/$SET" "$T/small.bak"
check "setup: backup of small" server_wait
rmdir "$MNT/$SET"

# --- VDC_Complete waits for the reader's close ---------------------------
new_set
S=$MNT/$SET
mkdir "$S"
server_start "BACKUP DATABASE small TO VIRTUAL_DEVICE='$SET'"
# the reader reads to end of file, then holds the file 1.5 s before closing
python3 -c '
import sys, time
with open(sys.argv[1], "rb", buffering=0) as f, open(sys.argv[2], "wb") as o:
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        o.write(b)
    time.sleep(1.5)
' "$S/$SET" "$T/held.bak" &
HOLD=$!
bg_track "$HOLD"
check "reader at end of file, file still open: server still waiting" \
	eval 'wait_status "$S" "^device: .* eof " 10 && sleep 0.5 && kill -0 $SPID 2>/dev/null'
check "reader closes after its end of file" wait "$HOLD"
check "reader closed: server completes" server_wait
check "reader closed: set done" test "$(status_field "$S" state)" = done
rmdir "$S"

# --- a second opener of a busy device is refused; the first goes on ----
# (the refusal used to tear down the first reader's stream: a truncated
# backup with dd exiting 0, or a use-after-free in the daemon)
new_set
S=$MNT/$SET
mkdir "$S"
make_db mid $((12 * 1024 * 1024 + 3))
server_start "BACKUP DATABASE mid TO VIRTUAL_DEVICE='$SET' WITH BUFFERCOUNT=2, MAXTRANSFERSIZE=1048576"
(dd if="$S/$SET" bs=1M status=none | (sleep 1.5; cat) >"$T/first.bak") &
R=$!
bg_track "$R"
check "busy device: first reader streaming" wait_status "$S" "^device: .* reading" 10
check "busy device: a second open is refused with EBUSY" \
	eval '! cat "$S/$SET" >/dev/null 2>"$T/err" && grep -q "busy" "$T/err"'
check "busy device: the first reader completes" wait "$R"
check "busy device: the server succeeds" server_wait
check "busy device: set done" test "$(status_field "$S" state)" = done
rmdir "$S"
check "busy device: the first reader's backup restores identical" \
	restores_identical "$T/first.bak" mid2 mid
rm -f "$DATA/mid.mdf"

# --- stripes read one after another ------------------------------------
# close(2) of a reader at end of file does not wait for the other stripes
# (it used to wait, unkillable, for the server's CloseDevice, which comes
# after every stripe: a for loop over the devices deadlocked)
new_set
S=$MNT/$SET
printf 'devices=2\n' >"$MNT/.config/$SET"
mkdir "$S"
server_start "BACKUP DATABASE small TO VIRTUAL_DEVICE='$SET', VIRTUAL_DEVICE='${SET}1'"
t0=$(now)
check "one after another: cat of each stripe in turn completes" \
	timeout 20 sh -c 'cat "$1/$2" >"$3.0" && cat "$1/${2}1" >"$3.1"' sh "$S" "$SET" "$T/seq"
check "one after another: within 10 s ($(ms_since "$t0") ms)" test "$(ms_since "$t0")" -lt 10000
check "one after another: the server succeeds" server_wait
rmdir "$S"
rm -f "$MNT/.config/$SET"
rm -f "$DATA/small2.mdf"
new_set
printf 'devices=2\n' >"$MNT/.config/$SET"
mkdir "$MNT/$SET"
server_start "RESTORE DATABASE small2 FROM VIRTUAL_DEVICE='$SET', VIRTUAL_DEVICE='${SET}1'"
check "one after another: restore, stripes written in turn" \
	timeout 20 sh -c 'cat "$3.1" >"$1/${2}1" && cat "$3.0" >"$1/$2"' sh "$MNT/$SET" "$SET" "$T/seq"
check "one after another: the restore succeeds" server_wait
check "one after another: restored database identical" same "$DATA/small2.mdf" "$DATA/small.mdf"
rmdir "$MNT/$SET"
rm -f "$MNT/.config/$SET" "$DATA/small2.mdf"

# --- Ctrl-C while waiting for the server -----------------------------
new_set
S=$MNT/$SET
mkdir "$S"
t0=$(now)
timeout -s INT 1 cat "$S/$SET" >/dev/null 2>"$T/err"
rc=$?
dt=$(ms_since "$t0")
check "Ctrl-C while waiting: cat ends by SIGINT after ${dt} ms (< 2500)" \
	test "$rc" -eq 124 -a "$dt" -lt 2500
check "Ctrl-C while waiting: set still waiting" test "$(status_field "$S" state)" = waiting
server_start "BACKUP DATABASE small TO VIRTUAL_DEVICE='$SET'"
timeout 30 cp "$S/$SET" "$T/again.bak"
check "Ctrl-C while waiting: the set then backs up normally" server_wait
rmdir "$S"

# --- open timeout -----------------------------------------------------
new_set
S=$MNT/$SET
printf 'open_timeout=700\n' >"$MNT/.config/$SET"
mkdir "$S"
t0=$(now)
timeout 10 cat "$S/$SET" >/dev/null 2>"$T/err"
rc=$?
dt=$(ms_since "$t0")
check "open timeout: cat fails after ${dt} ms (700..3000): $(cat "$T/err")" \
	test "$rc" -ne 0 -a "$dt" -ge 650 -a "$dt" -lt 3000
check "open timeout: error is ETIMEDOUT" grep -q 'timed out' "$T/err"
rmdir "$S"
rm "$MNT/.config/$SET"

# --- reader killed mid-stream ----------------------------------------
new_set
S=$MNT/$SET
mkdir "$S"
mkfifo "$T/fifo"
exec 7<>"$T/fifo"
server_start "BACKUP DATABASE big TO VIRTUAL_DEVICE='$SET' WITH BUFFERCOUNT=4, MAXTRANSFERSIZE=1048576"
dd if="$S/$SET" of="$T/fifo" bs=64k status=none &
DD=$!
bg_track "$DD"
check "reader killed: reader streaming" wait_status "$S" "^device: .* reading [1-9]" 10
kill -9 "$DD"
t0=$(now)
check "reader killed: server fails" eval '! server_wait'
check "reader killed: server ended within 5 s ($(ms_since "$t0") ms)" test "$(ms_since "$t0")" -lt 5000
check "reader killed: set failed" test "$(status_field "$S" state)" = failed
check "reader killed: status says why: $(last_error "$S")" \
	eval 'last_error "$S" | grep -q "reader killed by signal 9"'
exec 7>&-
rm -f "$T/fifo"
check "reader killed: rmdir of the failed set" rmdir "$S"

# --- reader closes before end of file --------------------------------
new_set
S=$MNT/$SET
mkdir "$S"
server_start "BACKUP DATABASE big TO VIRTUAL_DEVICE='$SET' WITH MAXTRANSFERSIZE=1048576"
timeout 30 head -c 100000 "$S/$SET" >/dev/null
check "reader stops early: server fails" eval '! server_wait'
check "reader stops early: status says why: $(last_error "$S")" \
	eval 'last_error "$S" | grep -q "before end of stream"'
rmdir "$S"

# --- writer killed mid-stream ----------------------------------------
new_set
S=$MNT/$SET
mkdir "$S"
mkfifo "$T/fifo"
exec 8<>"$T/fifo"
rm -f "$DATA/wk.mdf"
server_start "RESTORE DATABASE wk FROM VIRTUAL_DEVICE='$SET'"
dd if="$T/fifo" of="$S/$SET" bs=64k status=none &
DD=$!
bg_track "$DD"
head -c 150000 "$T/small.bak" >&8
check "writer killed: writer streaming" wait_status "$S" "^device: .* writing [1-9]" 10
kill -9 "$DD"
t0=$(now)
check "writer killed: server fails" eval '! server_wait'
check "writer killed: server ended within 5 s" test "$(ms_since "$t0")" -lt 5000
check "writer killed: no database restored" test ! -e "$DATA/wk.mdf"
check "writer killed: status says why: $(last_error "$S")" \
	eval 'last_error "$S" | grep -q "writer killed by signal 9"'
exec 8>&-
rm -f "$T/fifo"
rmdir "$S"

# --- server killed mid-stream (backup and restore) -------------------
new_set
S=$MNT/$SET
mkdir "$S"
server_raw "BACKUP DATABASE big TO VIRTUAL_DEVICE='$SET' WITH $STALL"
timeout 30 dd if="$S/$SET" of=/dev/null bs=64k status=none 2>"$T/err" &
DD=$!
check "server killed (backup): reader waiting mid-stream" wait_status "$S" "^device: .* reading" 10
sleep 0.3
kill -9 "$SPID"
t0=$(now)
wait "$DD"
rc=$?
check "server killed (backup): reader gets EIO within 5 s ($(ms_since "$t0") ms): $(cat "$T/err")" \
	eval 'test $rc -ne 0 && grep -q "Input/output error" "$T/err" && test $(ms_since $t0) -lt 5000'
check "server killed (backup): status says why: $(last_error "$S")" \
	eval 'test "$(status_field "$S" state)" = failed && last_error "$S" | grep -qi "server\|died\|dead"'
rmdir "$S"

new_set
S=$MNT/$SET
mkdir "$S"
server_raw "RESTORE DATABASE sk FROM VIRTUAL_DEVICE='$SET' WITH FAULT_STALL=30000"
timeout 30 dd if="$T/small.bak" of="$S/$SET" bs=64k status=none 2>"$T/err" &
DD=$!
check "server killed (restore): writer waiting" wait_status "$S" "^device: .* writing" 10
sleep 0.3
kill -9 "$SPID"
t0=$(now)
wait "$DD"
rc=$?
check "server killed (restore): writer gets EIO within 5 s: $(cat "$T/err")" \
	eval 'test $rc -ne 0 && grep -q "Input/output error" "$T/err" && test $(ms_since $t0) -lt 5000'
check "server killed (restore): status says why: $(last_error "$S")" \
	eval 'test "$(status_field "$S" state)" = failed && test "$(last_error "$S")" != none'
rmdir "$S"

# --- server aborts ----------------------------------------------------
new_set
S=$MNT/$SET
mkdir "$S"
server_start "BACKUP DATABASE big TO VIRTUAL_DEVICE='$SET' WITH MAXTRANSFERSIZE=65536, FAULT_ABORT_AFTER=1000000"
timeout 30 cat "$S/$SET" >"$T/out" 2>"$T/err"
rc=$?
check "server abort: reader gets EIO: $(cat "$T/err")" \
	eval 'test $rc -ne 0 && grep -q "Input/output error" "$T/err"'
check "server abort: server fails" eval '! server_wait'
# the server pads what it sent to BLOCKSIZE (512): 1000448 bytes
check "server abort: the reader got what was sent, no more ($(stat -c %s "$T/out"))" \
	test "$(stat -c %s "$T/out")" -le 1000448
check "server abort: status says why: $(last_error "$S")" \
	eval 'last_error "$S" | grep -qi "abort"'
rmdir "$S"

# --- Ctrl-C of a reader blocked mid-stream ---------------------------
new_set
S=$MNT/$SET
mkdir "$S"
server_start "BACKUP DATABASE big TO VIRTUAL_DEVICE='$SET' WITH $STALL"
t0=$(now)
timeout -s INT 2 dd if="$S/$SET" of=/dev/null bs=64k status=none 2>/dev/null
rc=$?
dt=$(ms_since "$t0")
check "Ctrl-C mid-stream: reader ends after ${dt} ms (< 4000)" test "$rc" -eq 124 -a "$dt" -lt 4000
t0=$(now)
check "Ctrl-C mid-stream: server fails" eval '! server_wait'
check "Ctrl-C mid-stream: server ended within 5 s" test "$(ms_since "$t0")" -lt 5000
check "Ctrl-C mid-stream: status says why: $(last_error "$S")" \
	eval 'last_error "$S" | grep -q "reader"'
rmdir "$S"

# --- a signal the reader handles loses nothing -------------------------
# dd prints its statistics on SIGUSR1 and goes on: the interrupted read
# returns EINTR, dd retries, no byte is lost.
new_set
S=$MNT/$SET
mkdir "$S"
server_start "BACKUP DATABASE small TO VIRTUAL_DEVICE='$SET' WITH FAULT_STALL=1500"
dd if="$S/$SET" of="$T/usr1.bak" bs=64k 2>"$T/err" &
DD=$!
bg_track "$DD"
wait_status "$S" "^device: .* reading" 10
sleep 0.3
kill -USR1 "$DD"
sleep 0.2
kill -USR1 "$DD"
check "SIGUSR1 mid-stream: dd completes" wait "$DD"
# dd prints one report at its end in any case; each SIGUSR1 it handled
# while reading adds one, so a second report is the proof it was hit.
reports=$(grep -c "records in" "$T/err")
check "SIGUSR1 mid-stream: dd was signalled while reading ($reports reports)" \
	test "$reports" -ge 2
check "SIGUSR1 mid-stream: server succeeds" server_wait
rmdir "$S"
check "SIGUSR1 mid-stream: the backup restores identical" \
	restores_identical "$T/usr1.bak" usr1 small

# --- abort from the shell ---------------------------------------------
new_set
S=$MNT/$SET
mkdir "$S"
server_start "BACKUP DATABASE big TO VIRTUAL_DEVICE='$SET' WITH $STALL"
timeout 30 dd if="$S/$SET" of=/dev/null bs=64k status=none 2>"$T/err" &
DD=$!
wait_status "$S" "^device: .* reading" 10
sleep 0.3
echo abort >"$S/.control"
t0=$(now)
wait "$DD"
rc=$?
check "abort via .control: reader gets EIO" eval 'test $rc -ne 0 && grep -q "Input/output error" "$T/err"'
check "abort via .control: server fails within 5 s" eval '! server_wait && test $(ms_since $t0) -lt 5000'
check "abort via .control: status says so: $(last_error "$S")" \
	eval 'last_error "$S" | grep -q "aborted from .control"'
rmdir "$S"

# --- unmount with a server waiting for its reader ---------------------
new_set
S=$MNT/$SET
mkdir "$S"
server_start "BACKUP DATABASE big TO VIRTUAL_DEVICE='$SET'"
check "unmount: server attached" wait_status "$S" "^state: active" 10
check "unmount: fusermount3 -u succeeds with no device open" fusermount3 -u "$MNT"
t0=$(now)
check "unmount: daemon exits" wait_gone "$FS_PID" 5
check "unmount: server fails within 5 s" eval '! server_wait && test $(ms_since $t0) -lt 5000'
check_nothing_left
wait "$FS_PID" 2>/dev/null
FS_PID=

# --- unmount while a device is being read ------------------------------
fs_mount || exit 1
new_set
S=$MNT/$SET
mkdir "$S"
server_start "BACKUP DATABASE big TO VIRTUAL_DEVICE='$SET' WITH $STALL"
timeout 30 dd if="$S/$SET" of=/dev/null bs=64k status=none 2>"$T/err" &
DD=$!
check "busy unmount: reader waiting mid-stream" wait_status "$S" "^device: .* reading" 10
sleep 0.3
check "busy unmount: fusermount3 -u refuses" eval '! fusermount3 -u "$MNT" 2>/dev/null'
check "busy unmount: still mounted" mountpoint -q "$MNT"
kill -TERM "$FS_PID"
t0=$(now)
wait "$DD"
rc=$?
check "busy unmount: daemon stopped, reader fails within 5 s: $(cat "$T/err")" \
	eval 'test $rc -ne 0 && test $(ms_since $t0) -lt 5000'
check "busy unmount: server fails within 5 s" eval '! server_wait && test $(ms_since $t0) -lt 5000'
check "busy unmount: daemon exits" wait_gone "$FS_PID" 5
fusermount3 -uz "$MNT" 2>/dev/null
check "busy unmount: mount gone" eval '! mountpoint -q "$MNT"'
check_nothing_left

# --- lazy unmount while a backup streams -----------------------------------
# fusermount3 -uz detaches the mount; the reader keeps its file, the
# backup completes, and the daemon exits after the last close.
fs_mount || exit 1
new_set
S=$MNT/$SET
mkdir "$S"
make_db lazy $((20 * 1024 * 1024 + 5))
server_start "BACKUP DATABASE lazy TO VIRTUAL_DEVICE='$SET' WITH MAXTRANSFERSIZE=1048576, FAULT_STALL=1500"
timeout 30 dd if="$S/$SET" of="$T/lazy.bak" bs=1M status=none &
DD=$!
check "lazy unmount: reader waiting mid-stream" wait_status "$S" "^device: .* reading" 10
check "lazy unmount: fusermount3 -uz" fusermount3 -uz "$MNT"
check "lazy unmount: the reader completes" wait "$DD"
check "lazy unmount: the server succeeds" server_wait
check "lazy unmount: the daemon exits after the last close" wait_gone "$FS_PID" 5
wait "$FS_PID" 2>/dev/null
FS_PID=
fs_mount || exit 1
check "lazy unmount: its backup restores identical" restores_identical "$T/lazy.bak" lazy2 lazy
check_nothing_left
