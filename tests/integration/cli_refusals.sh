#!/usr/bin/env bash
# cli_refusals.sh - every refusal path of `vdi exec` RESTORE, end to end:
# a stripe cut short, a flipped byte (data, header, trailer), a missing
# stripe, stripes of two different backups, a stripe given twice, foreign
# and empty input; swapped stripes are accepted.  After each refusal both
# sides exit non-zero, the original database is untouched and no
# temporary file is left.  Also: statement errors exit 2 before any set
# exists, RESTORE without REPLACE over an existing database, a missing
# database, a device-count mismatch, FAULT_ABORT_AFTER on either
# direction, a consumer that closes the pipe early.
. "$(dirname "$0")/cli_lib.bash" rf

# fresh NDEV STATEMENT-WITH-@ FILE...: pair on a fresh set, '@' in the
# statement replaced by its device clauses.
fresh() {
	local nd=$1 stmt
	n=$((n + 1))
	stmt=${2//@/$(devs "$PFX-$n" "$nd")}
	shift 2
	pair "$PFX-$n" "$nd" "$stmt" "$@"
}

# refuse WHAT EXPECTED-MESSAGE FILE...: RESTORE ... WITH REPLACE over
# orig must fail on both sides with the message, orig unchanged.
refuse() {
	local what=$1 msg=$2 r
	shift 2
	r=$(fresh $# "RESTORE DATABASE orig FROM @ WITH REPLACE" "$@")
	case "$r" in
	"1 "[1-9]*) ;;
	*) die "$what: expected exec 1 and pipe non-zero, got '$r'"; return ;;
	esac
	grep -qF -- "$msg" "$TMP/err" || die "$what: message '$msg' not in: $(cat "$TMP/err")"
	cmp -s "$DATA/orig.mdf" "$TMP/orig.copy" || die "$what: original database changed"
	ls -a "$DATA" | grep -qE '^\..*\.vdi-' && die "$what: temporary file left"
	r=$(fresh $# "RESTORE VERIFYONLY FROM @" "$@")
	[ "${r%% *}" = 1 ] || die "$what: VERIFYONLY accepted it ($r)"
}

# A backup of 3 MiB + 100 bytes on 2 devices (chunks 0,2 | 1,3), and a
# second backup of the same database (another backup id).
head -c $((3 * 1048576 + 100)) /dev/urandom >"$DATA/src.mdf"
r=$(fresh 2 "BACKUP DATABASE src TO @ WITH BLOCKSIZE=4096" "$TMP/a0" "$TMP/a1")
[ "$r" = "0 0" ] || die "backup a: $r $(cat "$TMP/err")"
r=$(fresh 2 "BACKUP DATABASE src TO @" "$TMP/b0" "$TMP/b1")
[ "$r" = "0 0" ] || die "backup b: $r $(cat "$TMP/err")"
head -c 777777 /dev/urandom >"$DATA/orig.mdf"
cp "$DATA/orig.mdf" "$TMP/orig.copy"

# Cut stripes.
head -c 100000 "$TMP/a0" >"$TMP/cut0"
refuse "stripe cut mid-chunk" "stripe truncated at byte offset" "$TMP/cut0" "$TMP/a1"
size=$(stat -c %s "$TMP/a1")
head -c $((size - 4096)) "$TMP/a1" >"$TMP/cut1"
refuse "stripe cut before its trailer" "device '$PFX-" "$TMP/a0" "$TMP/cut1"
head -c 300 "$TMP/a0" >"$TMP/cut2"
refuse "stripe cut in its header" "stream ended inside the backup header" "$TMP/cut2" "$TMP/a1"

# Flipped bytes.
flip() { # FILE OFFSET OUT
	cp "$1" "$3"
	printf "$(printf '\\x%02x' $(( $(od -An -tu1 -j "$2" -N1 "$1") ^ 1 )))" |
		dd of="$3" bs=1 seek="$2" conv=notrunc 2>/dev/null
}
flip "$TMP/a0" 200000 "$TMP/f0"
refuse "flipped data byte" "data checksum mismatch" "$TMP/f0" "$TMP/a1"
flip "$TMP/a1" 100 "$TMP/f1"
refuse "flipped header byte" "corrupt backup header: checksum mismatch" "$TMP/a0" "$TMP/f1"
flip "$TMP/a1" 520 "$TMP/f2"
refuse "flipped chunk header byte" "corrupt chunk header at byte offset 512" "$TMP/a0" "$TMP/f2"
toff=$((512 + 32 + 1048576 + 32 + 100 + 20)) # inside the trailer of a1 (chunks 1 and 3)
flip "$TMP/a1" "$toff" "$TMP/f3"
refuse "flipped trailer byte" "corrupt trailer" "$TMP/a0" "$TMP/f3"

# Missing, mixed, duplicated, foreign, empty.
refuse "missing stripe" "incomplete stripe set: backup of 'src' has 2 stripes, 1 device given" "$TMP/a0"
refuse "stripes of two backups" "stripes of different backups" "$TMP/a0" "$TMP/b1"
refuse "stripe given twice" "stripe 1 of 2 given twice" "$TMP/a0" "$TMP/a0"
head -c 100000 /dev/urandom >"$TMP/foreign"
refuse "foreign data" "not a vdi backup" "$TMP/foreign" "$TMP/a1"
: >"$TMP/empty"
refuse "empty stripe" "stripe is empty" "$TMP/a0" "$TMP/empty"

# Swapped stripes are accepted, and give the database back.
r=$(fresh 2 "RESTORE DATABASE orig FROM @ WITH REPLACE" "$TMP/a1" "$TMP/a0")
[ "$r" = "0 0" ] || die "swapped stripes refused: $r $(cat "$TMP/err")"
cmp -s "$DATA/src.mdf" "$DATA/orig.mdf" || die "swapped stripes: database differs"
cp "$TMP/orig.copy" "$DATA/orig.mdf"

# Refused before anything starts: exit 2 for statements, no set created.
expect_exit() { # CODE MESSAGE ARGS...
	local code=$1 msg=$2 out rc
	shift 2
	out=$(timeout -k 5 10 "$VDI" "$@" 2>&1 </dev/null)
	rc=$?
	[ $rc = "$code" ] || die "'$*': exit $rc, expected $code ($out)"
	grep -qF -- "$msg" <<<"$out" || die "'$*': message '$msg' not in '$out'"
}
expect_exit 2 "invalid BLOCKSIZE '1000': must be a power of two from 512 to 65536" \
	exec -D "$DATA" "BACKUP DATABASE src TO VIRTUAL_DEVICE='$PFX-x' WITH BLOCKSIZE=1000"
expect_exit 2 "invalid MAXTRANSFERSIZE '1MB'" \
	exec -D "$DATA" "BACKUP DATABASE src TO VIRTUAL_DEVICE='$PFX-x' WITH MAXTRANSFERSIZE=1MB"
expect_exit 2 "cannot parse statement: expected BACKUP or RESTORE" exec -D "$DATA" "SELECT 1"
expect_exit 2 "cannot parse statement: the statement is empty" exec -D "$DATA"
expect_exit 2 "unknown command 'frobnicate'" frobnicate
expect_exit 2 "invalid --devices '65'" pipe -s "$PFX-x" -n 65
expect_exit 2 "pipe: 2 devices need 2 FILE arguments, got 0" pipe -s "$PFX-x" -n 2
expect_exit 2 "given for more than one device" pipe -s "$PFX-x" - -
expect_exit 2 "pipe: missing -s SET" pipe
expect_exit 2 "invalid set name 'a/b'" pipe -s a/b
expect_exit 1 "'$DATA/orig.mdf' exists (use WITH REPLACE to overwrite it)" \
	exec -D "$DATA" "RESTORE DATABASE orig FROM VIRTUAL_DEVICE='$PFX-x'"
expect_exit 1 "cannot open database 'nosuch'" \
	exec -D "$DATA" "BACKUP DATABASE nosuch TO VIRTUAL_DEVICE='$PFX-x'"
expect_exit 1 "no client created it within 200 ms" \
	exec -D "$DATA" -t 200 "BACKUP DATABASE src TO VIRTUAL_DEVICE='$PFX-x'"
expect_exit 1 "no server configured it within 200 ms" pipe -s "$PFX-y" -t 200
ls /dev/shm | grep -qF "$PFX-x" && die "a refused statement left a set"

# Device count mismatch: the client offers 2 devices, the statement 1.
timeout -k 5 20 "$VDI" pipe -q -s "$PFX-m" -n 2 "$TMP/m0" "$TMP/m1" 2>/dev/null &
p=$!
timeout -k 5 20 "$VDI" exec -q -D "$DATA" "BACKUP DATABASE src TO VIRTUAL_DEVICE='$PFX-m'" 2>"$TMP/err"
[ $? = 1 ] || die "device count mismatch: exec did not fail"
grep -qF "has 2 devices but the statement names 1" "$TMP/err" || die "mismatch message: $(cat "$TMP/err")"
wait $p && die "device count mismatch: pipe succeeded"

# FAULT_ABORT_AFTER, backup and restore: both sides fail.
r=$(fresh 2 "BACKUP DATABASE src TO @ WITH FAULT_ABORT_AFTER=1000000" "$TMP/x0" "$TMP/x1")
[ "${r%% *}" = 1 ] && [ "${r##* }" != 0 ] || die "FAULT_ABORT_AFTER backup: $r"
grep -qF "aborted by FAULT_ABORT_AFTER=1000000" "$TMP/err" || die "FAULT_ABORT_AFTER message: $(cat "$TMP/err")"
touch "$TMP/x0" "$TMP/x1" # a device may have been aborted before its file was opened
refuse "restore of an aborted backup" "RESTORE DATABASE 'orig' failed: " "$TMP/x0" "$TMP/x1"
r=$(fresh 2 "RESTORE DATABASE orig FROM @ WITH REPLACE, FAULT_ABORT_AFTER=5000" "$TMP/a0" "$TMP/a1")
[ "${r%% *}" = 1 ] && [ "${r##* }" != 0 ] || die "FAULT_ABORT_AFTER restore: $r"
cmp -s "$DATA/orig.mdf" "$TMP/orig.copy" || die "FAULT_ABORT_AFTER restore changed the database"

# A consumer that stops early (broken pipe): both sides fail.
n=$((n + 1))
timeout -k 5 20 "$VDI" pipe -s "$PFX-$n" 2>"$TMP/perr" | head -c 1000 >/dev/null &
timeout -k 5 20 "$VDI" exec -q -D "$DATA" "BACKUP DATABASE src TO VIRTUAL_DEVICE='$PFX-$n'" 2>"$TMP/err"
[ $? = 1 ] || die "broken pipe: exec did not fail"
wait
grep -qF "Broken pipe" "$TMP/perr" || die "broken pipe: pipe message: $(cat "$TMP/perr")"

# vdi-sqlcmd: sqlcmd's options in front of vdi exec.
SQLCMD=$ROOT/${BUILD:-build}/vdi-sqlcmd
head -c 300000 /dev/urandom >"$DATA/sq.mdf"
timeout -k 5 60 "$VDI" pipe -q -s "$PFX-sq" -t 20000 "$TMP/sq.bak" 2>"$TMP/perr" &
VDI_DATA_DIR=$DATA timeout -k 5 60 "$SQLCMD" -S localhost -U sa -P pw -d master -b -h -1 -W \
	-Q "BACKUP DATABASE sq TO VIRTUAL_DEVICE='$PFX-sq' WITH FORMAT, INIT" >"$TMP/out" 2>"$TMP/err" ||
	die "vdi-sqlcmd -Q backup: exit $?: $(cat "$TMP/err")"
wait
grep -q "^BACKUP DATABASE successfully processed 37 pages in " "$TMP/out" || die "vdi-sqlcmd -Q: output $(cat "$TMP/out")"
printf "RESTORE DATABASE sq2 FROM VIRTUAL_DEVICE='%s'\ngo\n\nRESTORE VERIFYONLY FROM VIRTUAL_DEVICE='%s'\nGO\n" "$PFX-sq" "$PFX-sq" >"$TMP/two.sql"
(timeout -k 5 60 "$VDI" pipe -q -s "$PFX-sq" -t 20000 "$TMP/sq.bak" && timeout -k 5 60 "$VDI" pipe -q -s "$PFX-sq" -t 20000 "$TMP/sq.bak") 2>"$TMP/perr" &
VDI_DATA_DIR=$DATA timeout -k 5 60 "$SQLCMD" -b -i "$TMP/two.sql" >"$TMP/out" 2>"$TMP/err" ||
	die "vdi-sqlcmd -i with GO: exit $?: $(cat "$TMP/err")"
wait
cmp -s "$DATA/sq.mdf" "$DATA/sq2.mdf" || die "vdi-sqlcmd -i: the restore differs"
grep -q "^RESTORE DATABASE successfully processed" "$TMP/out" && grep -q "is valid" "$TMP/out" ||
	die "vdi-sqlcmd -i: output $(cat "$TMP/out")"
VDI_DATA_DIR=$DATA "$SQLCMD" -Q "BACKUP DATABASE nosuch TO VIRTUAL_DEVICE='$PFX-none'" >"$TMP/out" 2>"$TMP/err" ||
	die "vdi-sqlcmd without -b: a failed statement must exit 0, as sqlcmd does"
grep -q "^Msg 3013, Level 16, State 1, Server localhost, Line 1$" "$TMP/out" && grep -q "^BACKUP DATABASE is terminating abnormally.$" "$TMP/out" ||
	die "vdi-sqlcmd failure message: $(cat "$TMP/out")"
VDI_DATA_DIR=$DATA "$SQLCMD" -b -Q "BACKUP DATABASE nosuch TO VIRTUAL_DEVICE='$PFX-none'" >/dev/null 2>&1
[ $? = 1 ] || die "vdi-sqlcmd -b: a failed statement must exit 1"
printf "BACKUP DATABASE nosuch TO VIRTUAL_DEVICE='x'\nGO\nBACKUP DATABASE alsonot TO VIRTUAL_DEVICE='x'\nGO\n" >"$TMP/bad.sql"
VDI_DATA_DIR=$DATA "$SQLCMD" -b -i "$TMP/bad.sql" >"$TMP/out" 2>&1
[ $? = 1 ] && [ "$(grep -c 'terminating abnormally' "$TMP/out")" = 1 ] || die "vdi-sqlcmd -b stops at the first failed batch: $(cat "$TMP/out")"
VDI_DATA_DIR=$DATA "$SQLCMD" -i "$TMP/bad.sql" >"$TMP/out" 2>&1
[ $? = 0 ] && [ "$(grep -c 'terminating abnormally' "$TMP/out")" = 2 ] || die "vdi-sqlcmd without -b runs every batch: $(cat "$TMP/out")"
"$SQLCMD" -Z 2>"$TMP/err"
[ $? = 1 ] && grep -qF "Sqlcmd: '-Z': Unknown Option. Enter '-?' for help." "$TMP/err" || die "vdi-sqlcmd unknown option: $(cat "$TMP/err")"
"$SQLCMD" -S x 2>"$TMP/err"
[ $? = 1 ] && grep -q "no query" "$TMP/err" || die "vdi-sqlcmd without a query: $(cat "$TMP/err")"

left=$(ls /dev/shm | grep -F "$PFX" || true)
[ -z "$left" ] || die "shared memory left: $left"
[ $fail = 0 ] && echo "cli_refusals: all passed"
exit $fail
