#!/usr/bin/env bash
# cli_kill.sh - peers that vanish, and `vdi ls` / `vdi abort`:
#  - the client (vdi pipe) killed mid-stream: vdi exec exits non-zero
#    within a second (backup and restore);
#  - the server (vdi exec) killed mid-stream: vdi pipe exits non-zero
#    within a second (backup and restore);
#  - SIGTERM to vdi exec aborts both sides;
#  each at a pause point of vdi exec (VDI_TEST_PAUSE), never after a sleep;
#  - vdi ls shows a waiting set; vdi abort makes its client fail within a
#    second.
. "$(dirname "$0")/cli_lib.bash" kill

now_ms() { date +%s%3N; }

# wait_exit PID LIMIT_MS WHAT: waits for PID (a child), fails unless it
# exits non-zero within LIMIT_MS.  Sets $elapsed.
wait_exit() {
	local pid=$1 limit=$2 what=$3 t0 rc
	t0=$(now_ms)
	while kill -0 "$pid" 2>/dev/null; do
		if [ $(($(now_ms) - t0)) -gt $((limit + 2000)) ]; then
			die "$what: still running after $((limit + 2000)) ms"
			kill -9 "$pid" 2>/dev/null
			break
		fi
		sleep 0.02
	done
	wait "$pid"
	rc=$?
	elapsed=$(($(now_ms) - t0))
	[ $rc != 0 ] || die "$what: exited 0"
	[ $elapsed -le "$limit" ] || die "$what: took $elapsed ms (limit $limit ms)"
	echo "$what: exit $rc after $elapsed ms"
}

# wait_bytes FILE MIN: waits (up to 10 s) until FILE holds MIN bytes.
wait_bytes() {
	local i
	for ((i = 0; i < 500; i++)); do
		[ "$(stat -c %s "$1" 2>/dev/null || echo 0)" -ge "$2" ] && return 0
		sleep 0.02
	done
	die "no data arrived in $1"
	return 1
}

head -c $((64 * 1048576)) /dev/urandom >"$DATA/db.mdf"

# The processes killed here are started without `timeout` (a kill must
# reach vdi itself); wait_exit bounds every wait and the trap kills the rest.
#
# Every kill happens at a known point of the stream, not after a sleep:
# vdi exec runs with VDI_TEST_PAUSE=bytes=1048576 (docs/vdi.1, TESTING),
# so it stops itself (SIGSTOP) once the first MiB of the database moved,
# mid-stream; the victim is killed while it stands there, and a stopped
# server is let go (SIGCONT) before its reaction is timed.
PAUSE=bytes=1048576

# stopped PID: in state T, the pause point reached
stopped() {
	local st
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	st=${st##*) }
	[ "${st:0:1}" = T ]
}

# wait_paused PID WHAT: until vdi exec PID stopped at its pause point
# (10 s at most); its stderr is $TMP/err.
wait_paused() {
	local i
	for ((i = 0; i < 500; i++)); do
		stopped "$1" && return 0
		kill -0 "$1" 2>/dev/null || break
		sleep 0.02
	done
	die "$2: vdi exec never paused at $PAUSE: $(tr '\n' ' ' <"$TMP/err")"
	kill -9 "$1" 2>/dev/null
	return 1
}

# serve "STATEMENT": vdi exec in the background, paused mid-stream; sets
# server.
serve() {
	VDI_TEST_PAUSE=$PAUSE "$VDI" exec -q -D "$DATA" "$1" 2>"$TMP/err" &
	server=$!
}

# A whole backup, the input of the restore cases.
timeout -k 5 30 "$VDI" pipe -q -s "$PFX-0" "$TMP/full.bak" &
p=$!
timeout -k 5 30 "$VDI" exec -q -D "$DATA" "BACKUP DATABASE db TO VIRTUAL_DEVICE='$PFX-0'" || die "backup for the restore tests failed"
wait $p || die "backup for the restore tests: pipe failed"

# 1. Client killed mid-backup.
"$VDI" pipe -q -s "$PFX-1" "$TMP/s1" &
client=$!
serve "BACKUP DATABASE db TO VIRTUAL_DEVICE='$PFX-1'"
if wait_paused $server "client killed (backup)"; then
	kill -9 $client
	wait $client 2>/dev/null
	kill -CONT $server
	wait_exit $server 1000 "client killed mid-backup -> vdi exec"
fi

# 2. Client killed mid-restore.
"$VDI" pipe -q -s "$PFX-2" "$TMP/full.bak" &
client=$!
serve "RESTORE DATABASE r2 FROM VIRTUAL_DEVICE='$PFX-2'"
if wait_paused $server "client killed (restore)"; then
	kill -9 $client
	wait $client 2>/dev/null
	kill -CONT $server
	wait_exit $server 1000 "client killed mid-restore -> vdi exec"
fi
[ -e "$DATA/r2.mdf" ] && die "a killed restore created the database"
ls -a "$DATA" | grep -qE '^\..*\.vdi-' && die "a killed restore left its temporary file"

# 3. Server killed mid-backup.
"$VDI" pipe -q -s "$PFX-3" "$TMP/s3" 2>"$TMP/perr" &
client=$!
serve "BACKUP DATABASE db TO VIRTUAL_DEVICE='$PFX-3'"
if wait_paused $server "server killed (backup)"; then
	kill -9 $server
	wait $server 2>/dev/null
	wait_exit $client 1000 "server killed mid-backup -> vdi pipe"
fi

# 4. Server killed mid-restore.
"$VDI" pipe -q -s "$PFX-4" "$TMP/full.bak" 2>"$TMP/perr" &
client=$!
serve "RESTORE DATABASE r4 FROM VIRTUAL_DEVICE='$PFX-4'"
if wait_paused $server "server killed (restore)"; then
	kill -9 $server
	wait $server 2>/dev/null
	wait_exit $client 1000 "server killed mid-restore -> vdi pipe"
fi

# 5. SIGTERM to vdi exec mid-stream: it aborts, both exit non-zero.  The
# signal waits while the server is stopped and is taken when it goes on.
"$VDI" pipe -q -s "$PFX-5" "$TMP/s5" 2>/dev/null &
client=$!
serve "BACKUP DATABASE db TO VIRTUAL_DEVICE='$PFX-5'"
if wait_paused $server "SIGTERM"; then
	kill -TERM $server
	kill -CONT $server
	wait_exit $server 1000 "SIGTERM -> vdi exec"
	grep -qF "interrupted by signal" "$TMP/err" || die "SIGTERM message: $(cat "$TMP/err")"
	wait_exit $client 1000 "SIGTERM to the server -> vdi pipe"
fi

# 6. vdi ls and vdi abort on a set waiting for its server.
"$VDI" pipe -q -s "$PFX-6" -n 3 -t 20000 "$TMP/l0" "$TMP/l1" "$TMP/l2" 2>"$TMP/perr" &
client=$!
for ((i = 0; i < 100; i++)); do
	"$VDI" ls >"$TMP/ls" 2>&1
	grep -qF "$PFX-6" "$TMP/ls" && break
	sleep 0.02
done
grep -E "^[^ ]+ +$PFX-6 +[a-z ]+ +3 +" "$TMP/ls" >/dev/null || die "vdi ls does not show the set: $(cat "$TMP/ls")"
head -1 "$TMP/ls" | grep -q "^INSTANCE *SET *STATE *DEVICES" || die "vdi ls header: $(head -1 "$TMP/ls")"
grep -F "$PFX-6" "$TMP/ls" | grep -qw "$client" || die "vdi ls does not show the client pid $client: $(cat "$TMP/ls")"
"$VDI" abort "$PFX-6" || die "vdi abort failed"
wait_exit $client 1000 "vdi abort -> vdi pipe"
"$VDI" abort "$PFX-nosuch" 2>/dev/null && die "vdi abort of a missing set succeeded"

# 7. Either side killed at each media command (issue 12: fault injection
#    reaches them): vdi exec pauses before the command (VDI_TEST_PAUSE=
#    <command>), the victim dies there, the survivor fails within a second;
#    a restore leaves no database.
timeout -k 5 30 "$VDI" pipe -q -s "$PFX-7t" --features tape "$TMP/tape.bak" &
p=$!
timeout -k 5 30 "$VDI" exec -q -D "$DATA" "BACKUP DATABASE db TO VIRTUAL_DEVICE='$PFX-7t'" || die "tape backup for the media kills failed"
wait $p || die "tape backup for the media kills: pipe failed"
timeout -k 5 30 "$VDI" pipe -q -s "$PFX-7m" --features removable --volume-size 4000000 "$TMP/vol.bak" &
p=$!
timeout -k 5 30 "$VDI" exec -q -D "$DATA" "BACKUP DATABASE db TO VIRTUAL_DEVICE='$PFX-7m' WITH MAXTRANSFERSIZE=1048576" || die "removable backup for the media kills failed"
wait $p || die "removable backup for the media kills: pipe failed"
k=0
for c in "writemark|tape|B|$TMP/k" "getposition|tape|B|$TMP/k" "rewind|tape|R|$TMP/tape.bak" \
	"skipmarks|tape|R|$TMP/tape.bak" "setposition|tape|R|$TMP/tape.bak" \
	"setposition|disk|B|$TMP/k" "load|removable|B|$TMP/k" "load|removable|R|$TMP/vol.bak"; do
	IFS='|' read -r point feat kind file <<<"$c"
	vol=()
	[ "$feat" = removable ] && vol=(--volume-size 4000000)
	for victim in server client; do
		k=$((k + 1))
		PAUSE=$point
		rm -f "$TMP"/k "$TMP"/k.*
		"$VDI" pipe -q -s "$PFX-7-$k" --features "$feat" "${vol[@]}" "$file" 2>"$TMP/perr" &
		client=$!
		if [ "$kind" = B ]; then
			serve "BACKUP DATABASE db TO VIRTUAL_DEVICE='$PFX-7-$k' WITH MAXTRANSFERSIZE=1048576"
		else
			serve "RESTORE DATABASE r7 FROM VIRTUAL_DEVICE='$PFX-7-$k'"
		fi
		what="$feat $([ "$kind" = B ] && echo backup || echo restore), $victim killed at $point"
		wait_paused $server "$what" || { kill -9 $client 2>/dev/null; wait $client 2>/dev/null; continue; }
		if [ $victim = server ]; then
			kill -9 $server
			wait $server 2>/dev/null
			wait_exit $client 1000 "$what -> vdi pipe"
		else
			kill -9 $client
			wait $client 2>/dev/null
			kill -CONT $server
			wait_exit $server 1000 "$what -> vdi exec"
		fi
		[ -e "$DATA/r7.mdf" ] && die "$what: a killed restore created the database"
	done
done
PAUSE=bytes=1048576

left=$(ls /dev/shm | grep -F "$PFX" || true)
[ -z "$left" ] || die "shared memory left: $left"
[ $fail = 0 ] && echo "cli_kill: all passed"
exit $fail
