#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# fault_matrix.sh - issue 5 item 2: the fault matrix.
#
# For BACKUP and RESTORE through a vdifs mount, with 1 and 4 devices,
# kill -9 in turn
#   server  the server (`vdi exec`),
#   vdifs   the filesystem daemon,
#   peer    the reader (backup: dd from the device file) or the writer
#           (restore: dd into it) of device 0,
# at five points, reached deterministically with `vdi exec`'s test hook
# VDI_TEST_PAUSE (docs/vdi.1, TESTING), which stops the server there:
#   before    set created, server attached, not configured  (opened)
#   config    between RequestBuffers and EndConfiguration    (configuring)
#   mid       after 1 MiB of the database moved              (bytes=1048576)
#   flush     backup: before VDC_Flush                       (flush)
#             restore (no VDC_Flush): end of stream, every
#             stripe read, before CloseDevice                (close)
#   complete  backup: before VDC_Complete                    (complete)
#             restore (no VDC_Complete): server only, set
#             closed, before the rename of the database       (commit)
# The server victim is killed while stopped at the point; for the other
# victims the server is stopped there, the victim killed, the server
# continued (SIGCONT).
#
# Every cell checks:
#   - every surviving process (server, the other readers/writers) exits
#     within WAIT_MS of the kill; the time is measured and printed;
#   - every survivor reports failure: `vdi exec` exit status non-zero,
#     dd non-zero with EIO (ENOTCONN/ECONNABORTED when the daemon is the
#     victim), the set's .status "state: failed" with a last-error;
#   - RESTORE: the database file is byte-identical to what it was and the
#     data directory holds no temporary file;
#   - nothing is left: rmdir of the set works, the mount goes away (when
#     the daemon was killed: by itself through auto_unmount, or, where
#     fusermount3's watch misses it, a plain fusermount3 -u works, so no
#     process is stuck inside), no process of the cell, no /dev/shm
#     object of the set.
# A reader or writer killed before configuration is blocked in open(2),
# which waits for the server: its death must leave the set untouched
# (vdifs(1), "Opening"), so there the cell checks instead that a new
# reader or writer then completes the operation normally (a backup's
# stripes then pass RESTORE VERIFYONLY; a restore installs the database).
# The daemon killed at a restore's end of stream (every stripe read and
# verified, before CloseDevice) may let the server finish - nothing is
# missing - or make it fail, depending on whether its completion agent
# sees the client die before CloseDevice; either is accepted when the
# database matches the server's exit status (new on 0, untouched else).
# Readers and writers that ended normally before the kill (a 4-stripe
# backup's short stripe) are not survivors.
#
# Prints one line per cell, then the matrix (ok / FAIL(reason) / n/a) and
# the longest survivor wait per cell; exits 1 if any cell failed.
. "$(dirname "$0")/fault_lib.bash"

WAIT_MS=${FAULT_WAIT_MS:-5000}      # "a few seconds"
BUDGET_MS=${FAULT_BUDGET_MS:-300000} # cells start only within this
DB_SIZE=$((6 * 1024 * 1024 + 777))
T_START=$(now_ms)

DIRS="backup restore"
NDEVS="1 4"
VICTIMS="server vdifs peer"
POINTS="before config mid flush complete"

declare -A RESULT WAITED

# ----------------------------------------------------------------- setup
head -c "$DB_SIZE" /dev/urandom >"$DATA/db.mdf"
head -c $((3 * 1024 * 1024 + 5)) /dev/urandom >"$T/orig.mdf"

# dev_names SET N: the device names (F3)
dev_names() {
	local k
	echo "$1"
	for ((k = 1; k < $2; k++)); do echo "$1$k"; done
}
# clauses SET N: VIRTUAL_DEVICE='...', ...
clauses() {
	local d out=
	for d in $(dev_names "$1" "$2"); do out+="${out:+, }VIRTUAL_DEVICE='$d'"; done
	echo "$out"
}

# The backups the restores feed in, made without FUSE (vdi pipe).
make_backup() {
	local n=$1 set=$TAG-bak$1 k files=() pp sp
	for ((k = 0; k < n; k++)); do files+=("$T/bak$n.$k"); done
	"$VDI" pipe -s "$set" -n "$n" -t 20000 "${files[@]}" 2>"$T/bakpipe.err" &
	pp=$!
	track "$pp"
	VDI_DATA_DIR=$DATA timeout -k 2 60 "$VDI" exec -q -t 20000 \
		"BACKUP DATABASE db TO $(clauses "$set" "$n")" 2>"$T/bakexec.err"
	sp=$?
	local prc
	poll_until 20000 not_alive "$pp" || kill -9 "$pp"
	wait "$pp"
	prc=$?
	if [ $sp -ne 0 ] || [ $prc -ne 0 ]; then
		say "FAIL: setup: backup over $n device(s)"
		cat "$T/bakpipe.err" "$T/bakexec.err" >&2
		exit 1
	fi
}
make_backup 1
make_backup 4

# ------------------------------------------------------------------ cells
pause_of() { # DIR POINT
	case $2 in
	before) echo opened ;;
	config) echo configuring ;;
	mid) echo bytes=1048576 ;;
	flush) [ "$1" = backup ] && echo flush || echo close ;;
	complete) [ "$1" = backup ] && echo complete || echo commit ;;
	esac
}

# na_reason DIR VICTIM POINT: why a cell means nothing (empty: it does)
na_reason() {
	case $1/$2/$3 in
	restore/peer/flush) echo "no VDC_Flush in a restore; at end of stream every writer has closed (the close is the EOF)" ;;
	restore/peer/complete) echo "no VDC_Complete in a restore; the writers have closed" ;;
	restore/vdifs/complete) echo "no VDC_Complete in a restore; the set is closed on both sides, the daemon has no part left" ;;
	esac
}

NCELL=0
AUTO_MISSED=0
# Cell state: CELL_FAIL (first reason, short), CELL_DETAIL (all reasons)
cfail() {
	[ -z "$CELL_FAIL" ] && CELL_FAIL=$1
	CELL_DETAIL+=" [$1: $2]"
}

# dd_err_ok FILE VICTIM: the error a surviving reader/writer must see
dd_err_ok() {
	if [ "$2" = vdifs ]; then
		grep -Eq 'Input/output error|Transport endpoint is not connected|Software caused connection abort' "$1"
	else
		grep -q 'Input/output error' "$1"
	fi
}

stopped_or_gone() { stopped "$1" || ! alive "$1"; }
set_state() { sed -n 's/^state: //p' "$MNT/$SET/.status" 2>/dev/null; }
set_ended() { case $(set_state) in failed | done) return 0 ;; esac; return 1; }

# start_peer K: reader (backup) or writer (restore) of device K
start_peer() {
	local k=$1 dev=${DEVS[$1]}
	if [ "$DIR" = backup ]; then
		dd if="$MNT/$SET/$dev" of="$C/out.$k" bs=64k status=none 2>"$C/peer.$k" &
	else
		dd if="$T/bak$NDEV.$k" of="$MNT/$SET/$dev" bs=64k status=none 2>"$C/peer.$k" &
	fi
	PEER[$k]=$!
	track "${PEER[$k]}"
}

# verify_backup: RESTORE VERIFYONLY of the cell's stripes (vdi pipe)
verify_backup() {
	local set=$SET-v files=() k pp rc prc
	for ((k = 0; k < NDEV; k++)); do files+=("$C/out.$k"); done
	"$VDI" pipe -s "$set" -n "$NDEV" -t 20000 "${files[@]}" 2>"$C/verify.err" &
	pp=$!
	track "$pp"
	timeout -k 2 30 "$VDI" exec -q -t 20000 "RESTORE VERIFYONLY FROM $(clauses "$set" "$NDEV")" \
		>/dev/null 2>>"$C/verify.err"
	rc=$?
	poll_until 10000 not_alive "$pp" || kill -9 "$pp"
	wait "$pp"
	prc=$?
	[ $rc -eq 0 ] && [ $prc -eq 0 ]
}

run_cell() {
	DIR=$1 NDEV=$2 VICTIM=$3 POINT=$4
	local key="$DIR/$NDEV/$VICTIM/$POINT" na pause recover=0 k t0 rc el maxw=0 who
	local survivors=() victim_pid state lerr expect_db left either=0
	CELL_FAIL= CELL_DETAIL=
	na=$(na_reason "$DIR" "$VICTIM" "$POINT")
	if [ -n "$na" ]; then
		RESULT[$key]=n/a
		WAITED[$key]=-
		printf '%-8s %d %-6s %-8s n/a: %s\n' "$DIR" "$NDEV" "$VICTIM" "$POINT" "$na"
		return
	fi
	if [ $(($(now_ms) - T_START)) -gt "$BUDGET_MS" ]; then
		# many hangs in a row: report what is left instead of running
		# into make check's 600 s limit
		RESULT[$key]="FAIL(budget)"
		WAITED[$key]=-
		printf '%-8s %d %-6s %-8s FAIL(budget): not run, the %s ms budget is spent\n' "$DIR" "$NDEV" "$VICTIM" "$POINT" "$BUDGET_MS"
		return
	fi
	NCELL=$((NCELL + 1))
	SET=$TAG-$NCELL
	MNT=$T/m$NCELL
	C=$T/c$NCELL
	mkdir -p "$C"
	mapfile -t DEVS < <(dev_names "$SET" "$NDEV")
	pause=$(pause_of "$DIR" "$POINT")
	[ "$VICTIM" = peer ] && { [ "$POINT" = before ] || [ "$POINT" = config ]; } && recover=1
	PEER=()
	SERVER_RC=
	# The daemon killed after a restore's every stripe was read and
	# verified (writers closed, before CloseDevice): the server may
	# finish the restore (nothing is missing) or fail (it saw the client
	# die first); either is right if the database matches what it says.
	[ "$DIR/$VICTIM/$POINT" = restore/vdifs/flush ] && either=1

	if ! mount_vdifs "$MNT" "$C/vdifs.log" "devices=$NDEV,open_timeout=20000"; then
		cfail mount "vdifs did not mount"
		finish_cell "$key" 0
		return
	fi
	mkdir "$MNT/$SET" || cfail mkdir "mkdir of the set failed"
	if [ "$DIR" = restore ]; then
		cp "$T/orig.mdf" "$DATA/rdb.mdf"
		STMT="RESTORE DATABASE rdb FROM $(clauses "$SET" "$NDEV") WITH REPLACE"
	else
		STMT="BACKUP DATABASE db TO $(clauses "$SET" "$NDEV")"
	fi
	VDI_TEST_PAUSE=$pause VDI_DATA_DIR=$DATA "$VDI" exec -q -t 20000 "$STMT" 2>"$C/server.err" &
	SPID=$!
	track "$SPID"
	for ((k = 0; k < NDEV; k++)); do start_peer "$k"; done

	poll_until 10000 stopped_or_gone "$SPID"
	if ! stopped "$SPID"; then
		cfail no-pause "the server never stopped at '$pause': $(tr '\n' ' ' <"$C/server.err")"
		kill -9 "$SPID" 2>/dev/null
		for k in "${!PEER[@]}"; do kill -9 "${PEER[$k]}" 2>/dev/null; done
		finish_cell "$key" 0
		return
	fi
	if [ $recover = 1 ] && ! poll_until 3000 in_openat "${PEER[0]}"; then
		cfail setup "the reader/writer of device 0 is not waiting in open(2)"
	fi
	# the readers/writers still running when the victim dies
	# (one that already ended must have ended normally)
	for ((k = 0; k < NDEV; k++)); do
		if alive "${PEER[$k]}"; then
			survivors+=("peer$k")
		else
			wait "${PEER[$k]}"
			rc=$?
			[ $rc -eq 0 ] || cfail "early:peer$k" "device $k ended before the kill with exit $rc: $(tr '\n' ' ' <"$C/peer.$k")"
		fi
	done

	case $VICTIM in
	server) victim_pid=$SPID ;;
	vdifs) victim_pid=$FS_PID ;;
	peer) victim_pid=${PEER[0]} ;;
	esac
	kill -9 "$victim_pid"
	t0=$(now_ms)
	poll_until 2000 not_alive "$victim_pid" || cfail victim "the victim survived SIGKILL"
	[ "$VICTIM" != server ] && kill -CONT "$SPID"
	if [ $recover = 1 ]; then
		# nothing was lost: the set must still work with a new reader/writer
		start_peer 0
	fi

	# --- every survivor ends within WAIT_MS, and how
	[ "$VICTIM" != server ] && survivors=(server "${survivors[@]+"${survivors[@]}"}")
	for who in "${survivors[@]+"${survivors[@]}"}"; do
		[ "$who" = peer0 ] && [ "$VICTIM" = peer ] && [ $recover = 0 ] && continue
		local pid
		if [ "$who" = server ]; then pid=$SPID; else pid=${PEER[${who#peer}]}; fi
		if ! poll_until "$WAIT_MS" not_alive "$pid"; then
			cfail "hang:$who" "$who still running ${WAIT_MS} ms after the kill"
			kill -9 "$pid" 2>/dev/null
			kill -CONT "$pid" 2>/dev/null
		fi
		el=$(($(now_ms) - t0))
		[ "$el" -gt "$maxw" ] && maxw=$el
		if poll_until 2000 not_alive "$pid"; then
			wait "$pid"
			rc=$?
		else
			cfail "unkillable:$who" "$who survives SIGKILL"
			rc=137
		fi
		if [ "$who" = server ]; then
			SERVER_RC=$rc
			if [ $recover = 1 ]; then
				[ $rc -eq 0 ] || cfail "server-rc" "server failed after a killed open (exit $rc): $(tr '\n' ' ' <"$C/server.err")"
			elif [ $either = 1 ]; then
				: # judged with the database below
			elif [ $rc -eq 0 ]; then
				cfail "exit0:server" "vdi exec exited 0"
			elif ! grep -q 'failed' "$C/server.err"; then
				cfail "msg:server" "vdi exec failed without a message"
			fi
		else
			k=${who#peer}
			if [ $recover = 1 ]; then
				[ $rc -eq 0 ] || cfail "rc:$who" "device $k failed after a killed open: $(tr '\n' ' ' <"$C/peer.$k")"
			elif [ $rc -eq 0 ]; then
				cfail "exit0:$who" "dd of device $k exited 0"
			elif ! dd_err_ok "$C/peer.$k" "$VICTIM"; then
				cfail "errno:$who" "dd of device $k: $(tr '\n' ' ' <"$C/peer.$k")"
			fi
		fi
		CELL_DETAIL+=" $who=${el}ms"
	done

	# --- the set's status, when the daemon survived: it is a survivor too
	if [ "$VICTIM" != vdifs ] && [ "$pause" != commit ]; then
		poll_until "$WAIT_MS" set_ended || cfail "hang:vdifs" "the set still '$(set_state)' ${WAIT_MS} ms after the kill"
		el=$(($(now_ms) - t0))
		[ "$el" -gt "$maxw" ] && maxw=$el
		CELL_DETAIL+=" status=${el}ms"
		state=$(set_state)
		lerr=$(sed -n 's/^last-error: //p' "$MNT/$SET/.status" 2>/dev/null)
		if [ $recover = 1 ]; then
			[ "$state" = done ] || cfail status "state '$state' after recovery (last-error: $lerr)"
		elif [ "$state" != failed ] || [ -z "$lerr" ] || [ "$lerr" = none ]; then
			cfail status ".status state '$state', last-error '$lerr'"
		fi
	fi

	# --- backup after a killed open: the stripes read verify
	if [ "$DIR" = backup ] && [ $recover = 1 ] && [ -z "$CELL_FAIL" ]; then
		verify_backup || cfail verify "RESTORE VERIFYONLY of the stripes read: $(tr '\n' ' ' <"$C/verify.err")"
	fi

	# --- restore: all or nothing
	if [ "$DIR" = restore ]; then
		expect_db=$T/orig.mdf
		[ $recover = 1 ] && expect_db=$DATA/db.mdf
		if [ $either = 1 ]; then
			if [ "$SERVER_RC" = 0 ]; then
				expect_db=$DATA/db.mdf
				CELL_DETAIL+=" (server completed the restore)"
			elif ! grep -q failed "$C/server.err"; then
				cfail "msg:server" "vdi exec failed without a message"
			else
				CELL_DETAIL+=" (server failed)"
			fi
		fi
		cmp -s "$DATA/rdb.mdf" "$expect_db" ||
			cfail db "rdb.mdf is not byte-identical to $([ "$expect_db" = "$T/orig.mdf" ] && echo the original || echo the backed-up database)"
		left=$(ls -A "$DATA" | grep -vxE 'db\.mdf|rdb\.mdf|db\.mdf\.vdi-history' | tr '\n' ' ')
		if [ -n "$left" ]; then
			cfail tmpfile "left in the data dir: $left"
			(cd "$DATA" && rm -f -- $left)
		fi
	fi

	finish_cell "$key" "$maxw"
}

# finish_cell KEY MAXWAIT: tear down and check that nothing is left
finish_cell() {
	local key=$1 maxw=$2 k left p
	if [ "$VICTIM" = vdifs ] && ! alive "$FS_PID"; then
		# The daemon is gone.  auto_unmount (fusermount3 watching the
		# daemon) removes the mount, but libfuse documents that as racy
		# (libfuse PR #763): when it misses, a plain (not lazy) unmount
		# must work, i.e. no process is left inside the dead mount.
		if ! poll_until 1500 not_mounted "$MNT"; then
			if fusermount3 -u "$MNT" 2>"$C/umount.err"; then
				CELL_DETAIL+=" (auto_unmount missed: fusermount3 -u)"
				AUTO_MISSED=$((AUTO_MISSED + 1))
			else
				cfail mount-left "dead mount cannot be unmounted: $(cat "$C/umount.err")"
			fi
		fi
	else
		if mounted "$MNT"; then
			if [ -d "$MNT/$SET" ] && ! rmdir "$MNT/$SET" 2>"$C/rmdir.err"; then
				cfail rmdir "rmdir of the set: $(cat "$C/rmdir.err")"
			fi
			fusermount3 -u "$MNT" 2>/dev/null || { cfail umount "fusermount3 -u refused"; fusermount3 -uz "$MNT"; }
		fi
		poll_until 5000 not_alive "$FS_PID" || cfail "hang:vdifs" "vdifs still running after unmount"
	fi
	mounted "$MNT" && { cfail mount-left "still mounted"; fusermount3 -uz "$MNT"; }
	for p in "$SPID" "$FS_PID" "${PEER[@]+"${PEER[@]}"}"; do
		if alive "$p"; then
			cfail proc-left "process $p still running: $(tr '\0' ' ' <"/proc/$p/cmdline")"
			kill -9 "$p" 2>/dev/null
			kill -CONT "$p" 2>/dev/null
		fi
	done
	left=$(ls /dev/shm | grep -E "^vdi.*\\.$SET\$" | tr '\n' ' ')
	if [ -n "$left" ]; then
		cfail shm-left "/dev/shm: $left"
		(cd /dev/shm && rm -f -- $left)
	fi
	for p in "$SPID" "$FS_PID" "${PEER[@]+"${PEER[@]}"}"; do
		alive "$p" || wait "$p" 2>/dev/null
	done
	if [ -z "$CELL_FAIL" ]; then
		RESULT[$key]=ok
	else
		RESULT[$key]="FAIL($CELL_FAIL)"
		if [ -s "$C/vdifs.log" ]; then
			CELL_DETAIL+=" [vdifs log: $(tail -n 3 "$C/vdifs.log" | tr '\n' ' ')]"
		fi
	fi
	WAITED[$key]=$maxw
	printf '%-8s %d %-6s %-8s %-20s pause=%s max-wait=%sms%s\n' "$DIR" "$NDEV" "$VICTIM" "$POINT" \
		"${RESULT[$key]}" "$(pause_of "$DIR" "$POINT")" "$maxw" "$CELL_DETAIL"
	rm -rf "$C" "$MNT" 2>/dev/null
}

for DIR_ in $DIRS; do
	for N_ in $NDEVS; do
		for V_ in $VICTIMS; do
			for P_ in $POINTS; do
				# bash reports every job killed by a signal on stderr
				run_cell "$DIR_" "$N_" "$V_" "$P_" 2>>"$T/shell.err"
			done
		done
	done
done

# ------------------------------------------------------------------ report
# anything the shell said besides the reports of killed jobs
grep -v -E '^[^ ]+: line [0-9]+: +[0-9]+ Killed ' "$T/shell.err" 2>/dev/null | grep -v -E '^\s*$' | head -n 20 | sed 's/^/shell: /'
nfail=0 nok=0 nna=0
echo
echo "fault matrix: kill -9 of the victim with vdi exec stopped at the point"
echo "(flush/complete columns for restore: end of stream before CloseDevice / before the rename)"
printf '%-20s' "direction devs victim"
for P_ in $POINTS; do printf ' | %-18s' "$P_"; done
echo
for DIR_ in $DIRS; do
	for N_ in $NDEVS; do
		for V_ in $VICTIMS; do
			printf '%-8s %-4s %-6s' "$DIR_" "$N_" "$V_"
			for P_ in $POINTS; do
				r=${RESULT[$DIR_/$N_/$V_/$P_]}
				case $r in ok) nok=$((nok + 1)) ;; n/a) nna=$((nna + 1)) ;; *) nfail=$((nfail + 1)) ;; esac
				printf ' | %-18s' "$r"
			done
			echo
		done
	done
done
echo
echo "longest wait of a survivor after the kill (ms)"
for DIR_ in $DIRS; do
	for N_ in $NDEVS; do
		for V_ in $VICTIMS; do
			printf '%-8s %-4s %-6s' "$DIR_" "$N_" "$V_"
			for P_ in $POINTS; do printf ' | %-18s' "${WAITED[$DIR_/$N_/$V_/$P_]}"; done
			echo
		done
	done
done
echo
[ "$AUTO_MISSED" -gt 0 ] && say "auto_unmount missed $AUTO_MISSED dead mount(s); unmounted with fusermount3 -u"
say "$nok ok, $nfail failed, $nna n/a; $(($(now_ms) - T_START)) ms"
[ "$nfail" -eq 0 ]
