#!/usr/bin/env bash
# cli_roundtrip.sh - end-to-end round trips `vdi exec` x `vdi pipe`:
# BACKUP then RESTORE gives a byte-identical database for sizes 0, 1, 511,
# BLOCKSIZE-1, BLOCKSIZE+1 and a large one (1 GiB, as issue 3 asks;
# VDI_TEST_SMALL=1 makes it 256 MiB for quick runs), over 1, 2 and 8 devices, with several BLOCKSIZE /
# BUFFERCOUNT / MAXTRANSFERSIZE combinations, restores with other
# BUFFERCOUNT / MAXTRANSFERSIZE than the backup (and the same or no
# BLOCKSIZE: another one is refused, spec 4.1), stripes given in another order, stdin/stdout, statements
# from argv, -f and stdin, VDC_Complete and the non-failing fault options,
# HEADERONLY and VERIFYONLY.
. "$(dirname "$0")/cli_lib.bash" rt

# stripes PREFIX N -> "PREFIX0 PREFIX1 ..."
stripes() {
	local i
	for ((i = 0; i < $2; i++)); do echo -n "$1$i "; done
}

# roundtrip SIZE NDEV BACKUP_OPTS RESTORE_OPTS [ORDER]
# ORDER "rev" gives the stripes to the restore in reverse order.
roundtrip() {
	local size=$1 nd=$2 bopt=$3 ropt=$4 order=${5:-} s r files rfiles
	n=$((n + 1))
	s=$PFX-$n
	head -c "$size" /dev/urandom >"$DATA/db$n.mdf"
	files=$(stripes "$TMP/st$n." "$nd")
	r=$(pair "$s" "$nd" "BACKUP DATABASE db$n TO $(devs "$s" "$nd") $bopt" $files)
	[ "$r" = "0 0" ] || { die "backup size=$size dev=$nd '$bopt': exit $r: $(cat "$TMP/err" "$TMP/perr")"; return; }
	rfiles=$files
	[ "$order" = rev ] && rfiles=$(echo $files | tr ' ' '\n' | tac | tr '\n' ' ')
	r=$(pair "$s-r" "$nd" "RESTORE DATABASE out$n FROM $(devs "$s-r" "$nd") $ropt" $rfiles)
	[ "$r" = "0 0" ] || { die "restore size=$size dev=$nd '$ropt': exit $r: $(cat "$TMP/err" "$TMP/perr")"; return; }
	cmp -s "$DATA/db$n.mdf" "$DATA/out$n.mdf" || die "restore size=$size dev=$nd: database differs"
	rm -f "$DATA/db$n.mdf" "$DATA/out$n.mdf" $files
}

# 1. Sizes around the block size, 1, 2 and 8 devices.
for bs in 512 4096 65536; do
	for size in 0 1 511 $((bs - 1)) $((bs + 1)) $((1048576 + 1)); do
		for nd in 1 2 8; do
			roundtrip "$size" "$nd" "WITH BLOCKSIZE=$bs" "" rev
		done
	done
done
echo "sizes x devices: done ($n round trips)"

# 2. Buffer combinations; restores with other buffers than the backup.
combos=(
	"WITH BLOCKSIZE=512, BUFFERCOUNT=1, MAXTRANSFERSIZE=65536|WITH BLOCKSIZE=512, BUFFERCOUNT=64, MAXTRANSFERSIZE=4194304"
	"WITH BLOCKSIZE=65536, BUFFERCOUNT=3, MAXTRANSFERSIZE=131072|WITH BUFFERCOUNT=2, MAXTRANSFERSIZE=65536"
	"WITH BLOCKSIZE=4096, BUFFERCOUNT=20, MAXTRANSFERSIZE=524288|"
	"WITH MAXTRANSFERSIZE=4194304, BUFFERCOUNT=4|WITH BLOCKSIZE=512, BUFFERCOUNT=7, MAXTRANSFERSIZE=196608"
)
for c in "${combos[@]}"; do
	for nd in 1 3 8; do
		roundtrip $((5 * 1048576 + 777)) "$nd" "${c%%|*}" "${c#*|}" rev
	done
done
echo "buffer combinations: done"

# 3. The statement of the issue, exactly as written (a fresh GUID).
guid=$(tr a-f A-F </proc/sys/kernel/random/uuid)
s="{$guid}"
EXTRA_SETS=$s
head -c 3000000 /dev/urandom >"$DATA/MYDB.mdf"
PIPE_OPTS= r=$(pair "$s" 1 "BACKUP DATABASE MYDB TO VIRTUAL_DEVICE='$s' WITH BLOCKSIZE=4096, BUFFERCOUNT=20, MAXTRANSFERSIZE=524288" "$TMP/guid.bak")
[ "$r" = "0 0" ] || die "issue statement: exit $r: $(cat "$TMP/err")"
rm -f /dev/shm/vdi.*."$s"*

# 4. Large database through stdout and stdin, one device; and 2 devices.
big=$((1024 * 1048576))
[ "${VDI_TEST_SMALL:-0}" = 1 ] && big=$((256 * 1048576))
head -c "$big" /dev/urandom >"$DATA/big.mdf"
t0=$(date +%s%N)
timeout -k 5 120 "$VDI" pipe -q -s "$PFX-big" >"$TMP/big.bak" &
p=$!
timeout -k 5 120 "$VDI" exec -q -D "$DATA" "BACKUP DATABASE big TO VIRTUAL_DEVICE='$PFX-big' WITH MAXTRANSFERSIZE=1048576, BUFFERCOUNT=8" || die "big backup (stdout) failed"
wait $p || die "big backup: pipe failed"
t1=$(date +%s%N)
timeout -k 5 120 "$VDI" pipe -q -s "$PFX-bigr" <"$TMP/big.bak" &
p=$!
timeout -k 5 120 "$VDI" exec -q -D "$DATA" "RESTORE DATABASE bigout FROM VIRTUAL_DEVICE='$PFX-bigr' WITH MAXTRANSFERSIZE=262144" || die "big restore (stdin) failed"
wait $p || die "big restore: pipe failed"
t2=$(date +%s%N)
cmp -s "$DATA/big.mdf" "$DATA/bigout.mdf" || die "big: database differs"
echo "big $((big / 1048576)) MiB, 1 device: backup $(((t1 - t0) / 1000000)) ms, restore $(((t2 - t1) / 1000000)) ms"
rm -f "$TMP/big.bak" "$DATA/bigout.mdf"
n=$((n + 1))
t0=$(date +%s%N)
r=$(pair "$PFX-big2" 2 "BACKUP DATABASE big TO $(devs "$PFX-big2" 2) WITH BLOCKSIZE=65536, MAXTRANSFERSIZE=4194304, BUFFERCOUNT=8" "$TMP/bg0" "$TMP/bg1")
[ "$r" = "0 0" ] || die "big backup 2 devices: exit $r: $(cat "$TMP/err")"
r=$(pair "$PFX-big2r" 2 "RESTORE DATABASE bigout FROM $(devs "$PFX-big2r" 2)" "$TMP/bg1" "$TMP/bg0")
[ "$r" = "0 0" ] || die "big restore 2 devices: exit $r: $(cat "$TMP/err")"
t1=$(date +%s%N)
cmp -s "$DATA/big.mdf" "$DATA/bigout.mdf" || die "big 2 devices: database differs"
echo "big $((big / 1048576)) MiB, 2 devices: backup+restore $(((t1 - t0) / 1000000)) ms"
rm -f "$TMP"/bg? "$DATA/big.mdf" "$DATA/bigout.mdf"

# 5. Statement from -f and from stdin; HEADERONLY; VERIFYONLY; REPLACE.
head -c 2000000 /dev/urandom >"$DATA/hdr.mdf"
echo "BACKUP DATABASE [hdr] TO $(devs "$PFX-f" 2) WITH DESCRIPTION=N'it''s nightly', STATS=25;" >"$TMP/stmt.sql"
timeout -k 5 60 "$VDI" pipe -q -s "$PFX-f" -n 2 "$TMP/h0" "$TMP/h1" &
p=$!
timeout -k 5 60 "$VDI" exec -D "$DATA" -f "$TMP/stmt.sql" 2>"$TMP/err" || die "exec -f failed: $(cat "$TMP/err")"
wait $p || die "exec -f: pipe failed"
grep -q "^vdi: 100 percent processed$" "$TMP/err" || die "STATS lines missing: $(cat "$TMP/err")"
timeout -k 5 60 "$VDI" pipe -q -s "$PFX-h" -n 2 "$TMP/h1" "$TMP/h0" &
p=$!
echo "RESTORE HEADERONLY FROM $(devs "$PFX-h" 2)" |
	timeout -k 5 60 "$VDI" exec -q -D "$DATA" >"$TMP/out" 2>"$TMP/err" || die "HEADERONLY failed: $(cat "$TMP/err")"
wait $p || die "HEADERONLY: pipe failed"
for want in "DatabaseName      hdr" "Description       it's nightly" "BackupSize        2000000" \
	"Stripes           2" "BlockSize         512" "Stripe            2 of 2  device '$PFX-h'"; do
	grep -qF "$want" "$TMP/out" || die "HEADERONLY output lacks '$want': $(cat "$TMP/out")"
done
# HEADERONLY tolerates an incomplete stripe set (it only shows).
r=$(pair "$PFX-h1" 1 "RESTORE HEADERONLY FROM VIRTUAL_DEVICE='$PFX-h1'" "$TMP/h0")
[ "$r" = "0 0" ] || die "HEADERONLY of one stripe of two: exit $r: $(cat "$TMP/err")"
grep -qF "Stripe            1 of 2  device '$PFX-h1'" "$TMP/out" || die "HEADERONLY 1 of 2: $(cat "$TMP/out")"
r=$(pair "$PFX-v" 2 "RESTORE VERIFYONLY FROM $(devs "$PFX-v" 2)" "$TMP/h0" "$TMP/h1")
[ "$r" = "0 0" ] || die "VERIFYONLY: exit $r: $(cat "$TMP/err")"
grep -q "The backup set of 'hdr' .* is valid" "$TMP/out" || die "VERIFYONLY output: $(cat "$TMP/out")"
head -c 5 /dev/urandom >"$DATA/hdr2.mdf"
r=$(pair "$PFX-x" 2 "RESTORE DATABASE hdr2 FROM $(devs "$PFX-x" 2) WITH REPLACE" "$TMP/h0" "$TMP/h1")
[ "$r" = "0 0" ] || die "RESTORE WITH REPLACE: exit $r: $(cat "$TMP/err")"
cmp -s "$DATA/hdr.mdf" "$DATA/hdr2.mdf" || die "RESTORE WITH REPLACE: database differs"
ls -a "$DATA" | grep -qE '^\..*\.vdi-' && die "temporary files left in the data directory"

# 6. VDC_Complete negotiated, extra flushes, late completion, a stall.
PIPE_OPTS=-R
r=$(pair "$PFX-c" 2 "BACKUP DATABASE hdr TO $(devs "$PFX-c" 2) WITH FAULT_EXTRA_FLUSHES=3, FAULT_LATE_COMPLETE=200, FAULT_STALL=100" "$TMP/c0" "$TMP/c1")
[ "$r" = "0 0" ] || die "backup with VDC_Complete and faults: exit $r: $(cat "$TMP/err")"
PIPE_OPTS=
r=$(pair "$PFX-cr" 2 "RESTORE DATABASE hdr3 FROM $(devs "$PFX-cr" 2) WITH FAULT_STALL=100" "$TMP/c0" "$TMP/c1")
[ "$r" = "0 0" ] || die "restore with a stall: exit $r: $(cat "$TMP/err")"
cmp -s "$DATA/hdr.mdf" "$DATA/hdr3.mdf" || die "restore after VDC_Complete backup: differs"

# 7. The restore chain (issue 12): full, log, differential, log; the
# database after each step is the one backed up at that step, on 1 and 4
# devices; out-of-order steps refused with SQL Server's reasons.
change() { # change OFFSET BYTES: overwrite part of the chain database
	dd if=/dev/urandom of="$DATA/ch.mdf" bs=1 count="$2" seek="$1" conv=notrunc status=none
}
step() { # step NAME NDEV STATEMENT: back up or restore with files $TMP/NAME.k
	local name=$1 nd=$2 stmt=$3 files=() k
	for ((k = 0; k < nd; k++)); do files+=("$TMP/$name.$k"); done
	pair "$PFX-ch" "$nd" "$stmt" "${files[@]}"
}
for nd in 1 4; do
	rm -f "$DATA"/ch.mdf*
	head -c $((9 * 1048576 + 4321)) /dev/urandom >"$DATA/ch.mdf"
	D=$(devs "$PFX-ch" "$nd")
	r=$(step full "$nd" "BACKUP DATABASE ch TO $D WITH FORMAT, INIT, CHECKSUM")
	[ "$r" = "0 0" ] || die "chain/$nd: full: exit $r: $(cat "$TMP/err")"
	cp "$DATA/ch.mdf" "$TMP/at-full"
	change 3000000 100
	r=$(step log1 "$nd" "BACKUP LOG ch TO $D")
	[ "$r" = "0 0" ] || die "chain/$nd: log1: exit $r: $(cat "$TMP/err")"
	cp "$DATA/ch.mdf" "$TMP/at-log1"
	change 7000000 100
	r=$(step diff "$nd" "BACKUP DATABASE ch TO $D WITH DIFFERENTIAL")
	[ "$r" = "0 0" ] || die "chain/$nd: diff: exit $r: $(cat "$TMP/err")"
	cp "$DATA/ch.mdf" "$TMP/at-diff"
	change 3000000 100
	head -c 2000000 /dev/urandom >>"$DATA/ch.mdf"
	r=$(step log2 "$nd" "BACKUP LOG ch TO $D")
	[ "$r" = "0 0" ] || die "chain/$nd: log2: exit $r: $(cat "$TMP/err")"
	cp "$DATA/ch.mdf" "$TMP/at-log2"
	# what each holds: the differential 2 chunks of the full's 10 (both
	# changes), log2 4 (its own change, the differential's, the growth)
	r=$(step diff "$nd" "RESTORE HEADERONLY FROM $D")
	grep -q "^BackupType        5 (differential)" "$TMP/out" && grep -q "^Chunks            2$" "$TMP/out" ||
		die "chain/$nd: HEADERONLY of the differential: $(cat "$TMP/out")"
	r=$(step log2 "$nd" "RESTORE HEADERONLY FROM $D")
	grep -q "^BackupType        2 (log)" "$TMP/out" && grep -q "^Chunks            4$" "$TMP/out" &&
		grep -q "^FirstLSN          2$" "$TMP/out" && grep -q "^LastLSN           4$" "$TMP/out" ||
		die "chain/$nd: HEADERONLY of log2: $(cat "$TMP/out")"
	# full + diff + log2
	r=$(step full "$nd" "RESTORE DATABASE ch FROM $D WITH REPLACE, NORECOVERY")
	[ "$r" = "0 0" ] && cmp -s "$DATA/ch.mdf" "$TMP/at-full" && [ -f "$DATA/ch.mdf.vdi-restoring" ] ||
		die "chain/$nd: restore full NORECOVERY: exit $r: $(cat "$TMP/err")"
	r=$(step diff "$nd" "RESTORE DATABASE ch FROM $D WITH NORECOVERY")
	[ "$r" = "0 0" ] && cmp -s "$DATA/ch.mdf" "$TMP/at-diff" ||
		die "chain/$nd: restore diff: exit $r: $(cat "$TMP/err")"
	r=$(step log1 "$nd" "RESTORE LOG ch FROM $D WITH NORECOVERY")
	[ "${r%% *}" = 1 ] && grep -q "ends at LSN 2, which is too early to apply to the database (restored up to LSN 3)" "$TMP/err" ||
		die "chain/$nd: log1 after the differential: exit $r: $(cat "$TMP/err")"
	cmp -s "$DATA/ch.mdf" "$TMP/at-diff" || die "chain/$nd: a refused log changed the database"
	r=$(step log2 "$nd" "RESTORE LOG ch FROM $D WITH RECOVERY")
	[ "$r" = "0 0" ] && cmp -s "$DATA/ch.mdf" "$TMP/at-log2" && [ ! -e "$DATA/ch.mdf.vdi-restoring" ] ||
		die "chain/$nd: full+diff+log2: exit $r: $(cat "$TMP/err")"
	# full + log1 + log2 (the differential skipped), log2 first refused
	r=$(step full "$nd" "RESTORE DATABASE ch FROM $D WITH REPLACE, NORECOVERY")
	r=$(step log2 "$nd" "RESTORE LOG ch FROM $D WITH NORECOVERY")
	[ "${r%% *}" = 1 ] && grep -q "begins at LSN 2, which is too recent to apply" "$TMP/err" ||
		die "chain/$nd: log2 before log1: exit $r: $(cat "$TMP/err")"
	r=$(step log1 "$nd" "RESTORE LOG ch FROM $D WITH STANDBY='$TMP/undo'")
	[ "$r" = "0 0" ] && cmp -s "$DATA/ch.mdf" "$TMP/at-log1" ||
		die "chain/$nd: log1: exit $r: $(cat "$TMP/err")"
	r=$(step diff "$nd" "RESTORE DATABASE ch FROM $D WITH NORECOVERY")
	[ "${r%% *}" = 1 ] && grep -q "a differential backup applies only right after its full backup" "$TMP/err" ||
		die "chain/$nd: diff after a log: exit $r: $(cat "$TMP/err")"
	r=$(step log2 "$nd" "RESTORE LOG ch FROM $D")
	[ "$r" = "0 0" ] && cmp -s "$DATA/ch.mdf" "$TMP/at-log2" ||
		die "chain/$nd: full+log1+log2: exit $r: $(cat "$TMP/err")"
	n=$((n + 14))
	if [ "$nd" = 1 ]; then # kept for the refusals below
		for f in full.0 log1.0 diff.0 at-full; do cp "$TMP/$f" "$TMP/one-$f"; done
	fi
done
# Refusals that need no client: no full backup yet, a restoring database,
# a log restore of an online database, a log backup restored as DATABASE.
head -c 100000 /dev/urandom >"$DATA/nofull.mdf"
"$VDI" exec -q -D "$DATA" -t 1 "BACKUP DATABASE nofull TO VIRTUAL_DEVICE='$PFX-z' WITH DIFFERENTIAL" 2>"$TMP/err" &&
	die "differential without a full accepted"
grep -q "because a current database backup does not exist" "$TMP/err" || die "differential without a full: $(cat "$TMP/err")"
"$VDI" exec -q -D "$DATA" -t 1 "BACKUP LOG nofull TO VIRTUAL_DEVICE='$PFX-z'" 2>"$TMP/err" && die "log without a full accepted"
grep -q "BACKUP LOG cannot be performed because there is no current database backup" "$TMP/err" || die "log without a full: $(cat "$TMP/err")"
"$VDI" exec -q -D "$DATA" -t 1 "RESTORE LOG ch FROM VIRTUAL_DEVICE='$PFX-z'" 2>"$TMP/err" && die "log restore of an online database accepted"
grep -q "no files are ready to roll forward" "$TMP/err" || die "log restore online: $(cat "$TMP/err")"
r=$(pair "$PFX-ch" 1 "RESTORE DATABASE ch FROM VIRTUAL_DEVICE='$PFX-ch' WITH REPLACE, NORECOVERY" "$TMP/one-full.0")
"$VDI" exec -q -D "$DATA" -t 1 "BACKUP DATABASE ch TO VIRTUAL_DEVICE='$PFX-z'" 2>"$TMP/err" && die "backup of a restoring database accepted"
grep -q "it is restoring (finish its restore WITH RECOVERY first)" "$TMP/err" || die "backup restoring: $(cat "$TMP/err")"
r=$(pair "$PFX-ch" 1 "RESTORE DATABASE ch FROM VIRTUAL_DEVICE='$PFX-ch'" "$TMP/one-log1.0")
[ "${r%% *}" = 1 ] && grep -q "the backup set holds a log backup: use RESTORE LOG" "$TMP/err" ||
	die "log backup as RESTORE DATABASE: exit $r: $(cat "$TMP/err")"
# The chain breaks loudly when the database changes while restoring.
change 100 10
r=$(pair "$PFX-ch" 1 "RESTORE DATABASE ch FROM VIRTUAL_DEVICE='$PFX-ch' WITH NORECOVERY" "$TMP/one-diff.0")
[ "${r%% *}" = 1 ] && grep -q "the database this restore built is not the one backed up" "$TMP/err" ||
	die "tampered restoring database: exit $r: $(cat "$TMP/err")"
# MOVE relocates the file; a logical name not in the backup is refused.
r=$(pair "$PFX-ch" 1 "RESTORE DATABASE moved FROM VIRTUAL_DEVICE='$PFX-ch' WITH MOVE 'ch' TO '$TMP/elsewhere.mdf'" "$TMP/one-full.0")
[ "$r" = "0 0" ] && cmp -s "$TMP/elsewhere.mdf" "$TMP/one-at-full" || die "MOVE: exit $r: $(cat "$TMP/err")"
r=$(pair "$PFX-ch" 1 "RESTORE DATABASE moved FROM VIRTUAL_DEVICE='$PFX-ch' WITH MOVE 'nope' TO '$TMP/e2.mdf'" "$TMP/one-full.0")
[ "${r%% *}" = 1 ] && grep -q "logical file 'nope' is not part of database 'ch'" "$TMP/err" && [ ! -e "$TMP/e2.mdf" ] ||
	die "MOVE of a foreign name: exit $r: $(cat "$TMP/err")"
r=$(pair "$PFX-ch" 1 "RESTORE VERIFYONLY FROM VIRTUAL_DEVICE='$PFX-ch' WITH BLOCKSIZE=4096" "$TMP/one-full.0")
[ "${r%% *}" = 1 ] && grep -q "BLOCKSIZE=4096 does not match the media: the backup was written with BLOCKSIZE=512" "$TMP/err" ||
	die "restore with another BLOCKSIZE: exit $r: $(cat "$TMP/err")"
r=$(pair "$PFX-ch" 1 "RESTORE FILELISTONLY FROM VIRTUAL_DEVICE='$PFX-ch'" "$TMP/one-full.0")
grep -q "^LogicalName       ch$" "$TMP/out" || die "FILELISTONLY: $(cat "$TMP/out")"
n=$((n + 12))

# 8. Snapshot backups (issue 13): the user's tool takes the snapshot while
# vdi exec holds the database frozen; the restore mounts it back.
SNAP=$TMP/snap
mkdir -p "$SNAP"
head -c 3000001 /dev/urandom >"$DATA/sn.mdf"
cp "$DATA/sn.mdf" "$TMP/sn.orig"
cat >"$TMP/snapcmd" <<SNAPCMD
#!/bin/bash
echo "\$VDI_PHASE \$VDI_DEVICE" >>"$SNAP/phases"
case \$VDI_PHASE in
snapshot)
	flock -n "$DATA/sn.mdf" true && echo "not frozen" >>"$SNAP/marks"
	setsid flock "$DATA/sn.mdf" -c 'echo writer >>"$SNAP/marks"' </dev/null >/dev/null 2>&1 &
	sleep 0.3
	cp --reflink=auto "$DATA/sn.mdf" "$SNAP/sn.mdf"
	echo "snapshot taken" >>"$SNAP/marks" ;;
mount) cp "$SNAP/sn.mdf" "$DATA/sn.mdf" ;;
esac
SNAPCMD
chmod +x "$TMP/snapcmd"
PIPE_OPTS="--snapshot-cmd $TMP/snapcmd"
r=$(pair "$PFX-sn" 1 "BACKUP DATABASE sn TO VIRTUAL_DEVICE='$PFX-sn' WITH SNAPSHOT" "$TMP/sn.meta")
[ "$r" = "0 0" ] || die "snapshot backup: exit $r: $(cat "$TMP/err" "$TMP/perr")"
for i in $(seq 50); do grep -q writer "$SNAP/marks" 2>/dev/null && break; sleep 0.1; done
[ "$(cat "$SNAP/marks")" = "snapshot taken
writer" ] || die "snapshot backup: the database was not frozen while the snapshot was taken: $(cat "$SNAP/marks")"
[ "$(cut -d' ' -f1 "$SNAP/phases" | tr '\n' ' ')" = "prepare snapshot " ] || die "snapshot phases: $(cat "$SNAP/phases")"
flock -n "$DATA/sn.mdf" true || die "snapshot backup: the database is still frozen"
r=$(pair "$PFX-sn" 1 "RESTORE HEADERONLY FROM VIRTUAL_DEVICE='$PFX-sn'" "$TMP/sn.meta")
grep -q "^BackupType        1 (full, snapshot)" "$TMP/out" || die "snapshot HEADERONLY: $(cat "$TMP/out")"
# the snapshot is a full backup of the chain: a differential follows it
dd if=/dev/urandom of="$DATA/sn.mdf" bs=1 count=10 seek=2500000 conv=notrunc status=none
cp "$DATA/sn.mdf" "$TMP/sn.later"
PIPE_OPTS=
r=$(pair "$PFX-sn" 1 "BACKUP DATABASE sn TO VIRTUAL_DEVICE='$PFX-sn' WITH DIFFERENTIAL" "$TMP/sn.diff")
[ "$r" = "0 0" ] || die "differential after a snapshot: exit $r: $(cat "$TMP/err")"
PIPE_OPTS="--snapshot-cmd $TMP/snapcmd"
r=$(pair "$PFX-sn" 1 "RESTORE DATABASE sn FROM VIRTUAL_DEVICE='$PFX-sn' WITH SNAPSHOT, REPLACE, NORECOVERY" "$TMP/sn.meta")
PIPE_OPTS=
r2=$(pair "$PFX-sn" 1 "RESTORE DATABASE sn FROM VIRTUAL_DEVICE='$PFX-sn'" "$TMP/sn.diff")
[ "$r $r2" = "0 0 0 0" ] && cmp -s "$DATA/sn.mdf" "$TMP/sn.later" ||
	die "snapshot + differential: exit $r / $r2: $(cat "$TMP/err")"
PIPE_OPTS=
r=$(pair "$PFX-sn" 1 "RESTORE DATABASE sn2 FROM VIRTUAL_DEVICE='$PFX-sn' WITH SNAPSHOT" "$TMP/sn.meta")
[ "${r%% *}" = 1 ] && grep -q "client completed VDC_MountSnapshot with ERROR_NOT_SUPPORTED" "$TMP/err" ||
	die "snapshot restore by a client without a snapshot tool: exit $r: $(cat "$TMP/err")"
PIPE_OPTS="--snapshot-cmd $TMP/snapcmd"
rm -f "$DATA/sn.mdf"
r=$(pair "$PFX-sn" 1 "RESTORE DATABASE sn FROM VIRTUAL_DEVICE='$PFX-sn' WITH SNAPSHOT" "$TMP/sn.meta")
[ "$r" = "0 0" ] && cmp -s "$DATA/sn.mdf" "$TMP/sn.orig" || die "snapshot restore: exit $r: $(cat "$TMP/err" "$TMP/perr")"
tail -n 1 "$SNAP/phases" | grep -q "^mount " || die "snapshot restore: no mount phase: $(cat "$SNAP/phases")"
# refusals and failures: the database is thawed on every path
PIPE_OPTS="--snapshot-cmd $TMP/snapcmd"
r=$(pair "$PFX-sn" 1 "RESTORE DATABASE sn FROM VIRTUAL_DEVICE='$PFX-sn' WITH REPLACE" "$TMP/sn.meta")
[ "${r%% *}" = 1 ] && grep -q "restore it WITH SNAPSHOT" "$TMP/err" || die "snapshot metadata restored as a stream: exit $r: $(cat "$TMP/err")"
cp "$TMP/sn.orig" "$SNAP/sn.mdf.good"
echo x >>"$SNAP/sn.mdf" # the snapshot the tool mounts is not the one taken
r=$(pair "$PFX-sn" 1 "RESTORE DATABASE sn FROM VIRTUAL_DEVICE='$PFX-sn' WITH SNAPSHOT, REPLACE" "$TMP/sn.meta")
[ "${r%% *}" = 1 ] && grep -q "the mounted snapshot is not the database that was frozen: .* has 3000003 bytes, the backup recorded 3000001 bytes" "$TMP/err" ||
	die "a wrong snapshot mounted: exit $r: $(cat "$TMP/err")"
"$VDI" exec -q -D "$DATA" -t 1 "BACKUP DATABASE sn TO $(devs "$PFX-s4" 4) WITH SNAPSHOT" 2>"$TMP/err" && die "4-device snapshot accepted"
grep -q "a snapshot backup's metadata goes over exactly one virtual device" "$TMP/err" || die "4-device snapshot: $(cat "$TMP/err")"
for c in "exit 3|client completed VDC_Snapshot with ERROR_OPERATION_ABORTED" \
	"kill -9 \$\$|client completed VDC_Snapshot with ERROR_OPERATION_ABORTED" \
	"sleep 5|the freeze limit of 700 ms passed before the client completed VDC_Snapshot"; do
	printf '#!/bin/bash\n[ "$VDI_PHASE" = snapshot ] && { %s; }\nexit 0\n' "${c%%|*}" >"$TMP/badsnap"
	chmod +x "$TMP/badsnap"
	PIPE_OPTS="--snapshot-cmd $TMP/badsnap"
	timeout -k 5 60 "$VDI" pipe -q -s "$PFX-sb" -t 20000 $PIPE_OPTS "$TMP/sb.meta" 2>"$TMP/perr" &
	p=$!
	timeout -k 5 60 "$VDI" exec -q -D "$DATA" -t 20000 --freeze-timeout 700 \
		"BACKUP DATABASE sn TO VIRTUAL_DEVICE='$PFX-sb' WITH SNAPSHOT" >"$TMP/out" 2>"$TMP/err"
	e=$?
	wait $p
	pc=$?
	[ "$e" = 1 ] && [ "$pc" != 0 ] && grep -q "${c#*|}" "$TMP/err" ||
		die "snapshot tool '${c%%|*}': exec $e, pipe $pc: $(cat "$TMP/err" "$TMP/perr")"
	flock -n "$DATA/sn.mdf" true || die "snapshot tool '${c%%|*}': the database was left frozen"
done
PIPE_OPTS=
n=$((n + 12))

# 9. --generate: a database that costs no read (issue 11's client-path
# benchmark); restored, every 8-byte word is off * 0x9e3779b97f4a7c15 + 1.
for nd in 1 3; do
	files=$(stripes "$TMP/gen$nd." "$nd")
	timeout -k 5 60 "$VDI" pipe -q -s "$PFX-gen" -n "$nd" -t 20000 $files 2>"$TMP/perr" &
	timeout -k 5 60 "$VDI" exec -q -D "$DATA" -t 20000 --generate 5000007 \
		"BACKUP DATABASE gen TO $(devs "$PFX-gen" "$nd")" 2>"$TMP/err" || die "--generate backup ($nd): $(cat "$TMP/err")"
	wait
	r=$(pair "$PFX-gen" "$nd" "RESTORE DATABASE gen FROM $(devs "$PFX-gen" "$nd") WITH REPLACE" $files)
	[ "$r" = "0 0" ] || die "--generate restore ($nd): exit $r: $(cat "$TMP/err")"
	python3 - "$DATA/gen.mdf" <<'PY' || die "--generate ($nd): the restored database is not the pattern"
import struct, sys
b = open(sys.argv[1], 'rb').read()
want = b''.join(struct.pack('<Q', (o * 0x9e3779b97f4a7c15 + 1) % 2**64) for o in range(0, 5000008, 8))[:5000007]
sys.exit(0 if b == want else 1)
PY
	[ ! -e "$DATA/gen.mdf.vdi-history" ] || die "--generate wrote a history"
	rm -f "$DATA/gen.mdf" $files
	n=$((n + 1))
done
"$VDI" exec -q -D "$DATA" --generate 10 "BACKUP DATABASE gen TO VIRTUAL_DEVICE='x' WITH DIFFERENTIAL" 2>"$TMP/err" && die "--generate DIFFERENTIAL accepted"
grep -q "only a full BACKUP DATABASE reads a generated database" "$TMP/err" || die "--generate DIFFERENTIAL: $(cat "$TMP/err")"

left=$(ls /dev/shm | grep -F "$PFX" || true)
[ -z "$left" ] || die "shared memory left: $left"
[ $fail = 0 ] && echo "cli_roundtrip: all passed ($n round trips)"
exit $fail
