#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# security.sh - issue 5 item 5: what a second uid cannot do, what a group
# member can, and set names with path tricks.
#
#   1. A set made by `vdi pipe` (mode 0600): its shared memory is 0600 and
#      owned by the creator; another uid cannot open it (`vdi exec` fails
#      with VD_E_SECURITY and the set's name), cannot abort it, does not
#      see it in `vdi ls`, and cannot open its control region nor its
#      buffer area (/dev/shm/vdi-b0.*: 0600, open for reading and for
#      writing refused) while a backup runs; the backup then completes.
#   2. The same with `vdi pipe -g GROUP`: objects 0660 with the group; a
#      uid outside the group is still refused, a member runs the backup
#      (`vdi exec` as that uid), and its result restores byte for byte.
#   3. A vdifs mount without allow_other: another uid can neither list
#      the mount, nor read or write a device file, nor mkdir (EACCES),
#      though the path to the mount is open to it; the owner's backup
#      through the same device then completes.
#   4. A vdifs mount with allow_other,group=GROUP: a uid outside the group
#      gets EACCES on the device files; a member reads a backup out of one
#      and writes a restore into another, restored database identical.
#   5. Names with path tricks (../x, a/b, a\b, longer than 127 bytes, tab,
#      newline, ESC, DEL, ".", "..", empty) are refused by `vdi pipe -s`
#      and `vdi exec` (VIRTUAL_DEVICE and database name) with exit 2 and
#      a message naming the problem, and by mkdir in the mount (EINVAL,
#      ENAMETOOLONG, EEXIST, ENOENT); nothing is created: no /dev/shm
#      object, no directory, no file.
#
# The second uid is nobody (65534) through setpriv(1), the group member
# uid 65533 with the group as its only supplementary group; the group is
# the first of users, staff, daemon that exists (the test never edits
# /etc/group: setpriv --groups gives the membership).  Needs root (CI
# runs the suite as root); prints SKIP and passes otherwise.
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) BDIR=$BUILD ;; *) BDIR=$ROOT/$BUILD ;; esac
NAME=security.sh
. "$(dirname "$0")/report.bash"

if [ "$(id -u)" -ne 0 ] || ! command -v setpriv >/dev/null; then
	say "SKIP: needs root and setpriv(1) to act as a second uid"
	exit 0
fi
[ -x "$BDIR/vdi" ] && [ -x "$BDIR/vdifs" ] || { say "FAIL: build $BDIR/vdi and $BDIR/vdifs first"; exit 1; }

OUID=65534 # nobody
OGID=65534
MUID=65533 # the group member: a uid with no other right
GROUP=
for g in users staff daemon; do
	getent group "$g" >/dev/null && { GROUP=$g; break; }
done
[ -n "$GROUP" ] || { say "FAIL: no group users, staff or daemon to test with"; exit 1; }
GID=$(getent group "$GROUP" | cut -d: -f3)

TAG=sec-$$
T=$(mktemp -d "${TMPDIR:-/tmp}/vdi-sec.XXXXXX")
chmod 711 "$T" # the other uid may walk through, not list
BIN=$T/bin
DATA=$T/data   # root's databases
ODATA=$T/odata # databases the other uid reads and writes
mkdir -p "$BIN" "$DATA" "$ODATA" "$T/cwd"
chmod 755 "$BIN"
chmod 777 "$ODATA"
cp "$BDIR/vdi" "$BIN/vdi" # runnable by the other uid wherever the build lives
chmod 755 "$BIN/vdi"
VDI=$BIN/vdi
MNTS=()
FS_PIDS=()
BG=()
FAILED=0
N=0

as_other() { setpriv --reuid=$OUID --regid=$OGID --clear-groups -- "$@"; }
# the member is a uid of its own: objects it creates are its own
as_member() { setpriv --reuid=$MUID --regid=$MUID --groups=$GID -- "$@"; }
new_set() { N=$((N + 1)); SET=$TAG-$N; }
shm() { echo "/dev/shm/vdi.MSSQLSERVER.$1"; }
area() { echo "/dev/shm/vdi-b0.MSSQLSERVER.$1"; }
ours() { ls /dev/shm 2>/dev/null | grep -F "$TAG" || true; }


umount_all() {
	local m p i
	for m in "${MNTS[@]+"${MNTS[@]}"}"; do
		mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null; }
	done
	for p in "${FS_PIDS[@]+"${FS_PIDS[@]}"}"; do
		for i in $(seq 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
		kill -0 "$p" 2>/dev/null && { fail "vdifs (pid $p) still running 10 s after unmount"; kill -9 "$p"; }
		wait "$p" 2>/dev/null
	done
	MNTS=()
	FS_PIDS=()
}

cleanup() {
	local p
	trap - EXIT INT TERM
	for p in "${BG[@]+"${BG[@]}"}"; do kill -0 "$p" 2>/dev/null && kill_tree "$p"; done
	for p in "${BG[@]+"${BG[@]}"}"; do wait "$p" 2>/dev/null; done
	umount_all
	report_end "$(ours)"
}
trap cleanup EXIT
trap 'fail "interrupted"; exit 1' INT TERM

# mount DIR OPTIONS...: vdifs in the foreground, tracked
mount_fs() {
	local m=$1 i
	shift
	mkdir -p "$m"
	"$BDIR/vdifs" "$m" -f "$@" 2>>"$T/vdifs.log" &
	FS_PIDS+=($!)
	MNTS+=("$m")
	for i in $(seq 100); do
		mountpoint -q "$m" && return 0
		sleep 0.05
	done
	fail "mount vdifs on $m ($*)"
	return 1
}

# wait_file PATH: up to 10 s for PATH to exist
wait_file() {
	local i
	for i in $(seq 200); do [ -e "$1" ] && return 0; sleep 0.05; done
	return 1
}

# fails_with "what" "text" cmd...: cmd fails and its output has text
fails_with() {
	local what=$1 text=$2 out rc
	shift 2
	out=$("$@" 2>&1)
	rc=$?
	if [ $rc -eq 0 ]; then
		fail "$what: succeeded"
	elif [[ $out != *"$text"* ]]; then
		fail "$what: expected '$text', got (exit $rc): $out"
	else
		pass "$what (exit $rc: ${out//$'\n'/ | })"
	fi
}

# cannot_open_as "what" WHO PATH: WHO cannot open PATH for reading nor
# for writing (the kernel says EACCES)
cannot_open_as() {
	local what=$1 who=$2 path=$3
	fails_with "$what: open for reading" "Permission denied" \
		$who timeout -k 2 10 dd if="$path" of=/dev/null bs=4096 count=1 status=none
	fails_with "$what: open for writing" "Permission denied" \
		$who timeout -k 2 10 dd if=/dev/zero of="$path" bs=512 count=1 conv=notrunc status=none
}

head -c $((3 * 1048576 + 12345)) /dev/urandom >"$DATA/db.mdf"
cp "$DATA/db.mdf" "$ODATA/db.mdf"
chmod 644 "$ODATA/db.mdf"
echo probe >"$T/probe"
chmod 644 "$T/probe"
check "the other uid can reach files in the test directory (so refusals below are the objects' own)" \
	eval 'as_other cat "$T/probe" >/dev/null'

# ----------------------------------------------------------------------
say "1. a private set (vdi pipe, mode 0600)"
new_set
S=$SET
timeout -k 5 60 "$VDI" pipe -q -s "$S" -t 30000 "$T/b1.bak" 2>"$T/pipe.err" &
P=$!
BG+=($P)
wait_file "$(shm "$S")" || fail "set $S not created"
check "control region 0600, owned by root" test "$(stat -c '%a %U' "$(shm "$S")")" = "600 root"
fails_with "other uid: vdi exec cannot open the set" "VD_E_SECURITY" \
	as_other timeout -k 5 30 "$VDI" exec -q -D "$ODATA" -t 3000 "BACKUP DATABASE db TO VIRTUAL_DEVICE='$S'"
fails_with "other uid: the error names the set and the cause" "cannot open set '$S': Permission denied" \
	as_other timeout -k 5 30 "$VDI" exec -q -D "$ODATA" -t 3000 "BACKUP DATABASE db TO VIRTUAL_DEVICE='$S'"
fails_with "other uid: vdi abort refused" "VD_E_SECURITY" as_other timeout -k 5 30 "$VDI" abort "$S"
check "other uid: vdi ls does not show the set" eval '! as_other timeout -k 5 30 "$VDI" ls 2>&1 | grep -qF "$S"'
check "root: vdi ls shows the set" eval 'timeout -k 5 30 "$VDI" ls 2>&1 | grep -qF "$S"'
cannot_open_as "other uid: control region" as_other "$(shm "$S")"
# a backup that pauses 5 s per device after its header, so that the
# buffer area exists while we try it
timeout -k 5 60 "$VDI" exec -q -D "$DATA" -t 30000 \
	"BACKUP DATABASE db TO VIRTUAL_DEVICE='$S' WITH BUFFERCOUNT=2, FAULT_STALL=5000" 2>"$T/exec.err" &
E=$!
BG+=($E)
if wait_file "$(area "$S")"; then
	check "buffer area 0600, owned by root" test "$(stat -c '%a %U' "$(area "$S")")" = "600 root"
	cannot_open_as "other uid: buffer area vdi-b0" as_other "$(area "$S")"
	cannot_open_as "other uid: control region of the running set" as_other "$(shm "$S")"
else
	fail "buffer area $(area "$S") never appeared"
fi
check "the backup still completes (server)" wait $E
check "the backup still completes (client)" wait $P
check "the backup holds the database" test "$(stat -c %s "$T/b1.bak")" -gt $((3 * 1048576))
check "no object of the set left" test ! -e "$(shm "$S")" -a ! -e "$(area "$S")"

# ----------------------------------------------------------------------
say "2. a set shared with group $GROUP (vdi pipe -g)"
new_set
S=$SET
timeout -k 5 60 "$VDI" pipe -q -g "$GROUP" -s "$S" -n 2 -t 30000 "$T/g.0" "$T/g.1" 2>"$T/pipe.err" &
P=$!
BG+=($P)
wait_file "$(shm "$S")" || fail "set $S not created"
check "control region 0660, group $GROUP" test "$(stat -c '%a %G' "$(shm "$S")")" = "660 $GROUP"
fails_with "uid outside the group: vdi exec refused" "VD_E_SECURITY" \
	as_other timeout -k 5 30 "$VDI" exec -q -D "$ODATA" -t 3000 "BACKUP DATABASE db TO VIRTUAL_DEVICE='$S', VIRTUAL_DEVICE='${S}1'"
as_member timeout -k 5 60 "$VDI" exec -q -D "$ODATA" -t 30000 \
	"BACKUP DATABASE db TO VIRTUAL_DEVICE='$S', VIRTUAL_DEVICE='${S}1' WITH FAULT_STALL=4000" 2>"$T/exec.err" &
E=$!
BG+=($E)
if wait_file "$(area "$S")"; then
	check "buffer area (made by the member) 0660, group $GROUP" test "$(stat -c '%a %G' "$(area "$S")")" = "660 $GROUP"
	cannot_open_as "uid outside the group: buffer area" as_other "$(area "$S")"
else
	fail "buffer area $(area "$S") never appeared"
fi
check "group member: the backup succeeds (server)" wait $E
check "group member: the backup succeeds (client)" wait $P
[ -s "$T/exec.err" ] && say "  member's server said: $(cat "$T/exec.err")"
new_set
timeout -k 5 60 "$VDI" pipe -q -s "$SET" -n 2 -t 30000 "$T/g.1" "$T/g.0" &
P=$!
BG+=($P)
check "the member's backup restores (root)" \
	timeout -k 5 60 "$VDI" exec -q -D "$DATA" -t 30000 "RESTORE DATABASE g FROM VIRTUAL_DEVICE='$SET', VIRTUAL_DEVICE='${SET}1'"
wait $P
check "restored database identical" cmp -s "$DATA/db.mdf" "$DATA/g.mdf"

# ----------------------------------------------------------------------
say "3. a vdifs mount without allow_other"
M=$T/m1
mount_fs "$M" -o devices=1,open_timeout=30000 && chmod 755 "$M"
new_set
S=$SET
mkdir "$M/$S"
fails_with "other uid: list the mount" "Permission denied" as_other ls "$M"
fails_with "other uid: stat a device" "Permission denied" as_other stat "$M/$S/$S"
fails_with "other uid: read a device file" "Permission denied" as_other timeout -k 2 10 cat "$M/$S/$S"
fails_with "other uid: write a device file" "Permission denied" \
	as_other timeout -k 2 10 sh -c 'echo x > "$1"' _ "$M/$S/$S"
fails_with "other uid: mkdir a set" "Permission denied" as_other mkdir "$M/$TAG-x"
fails_with "other uid: abort through .control" "Permission denied" \
	as_other sh -c 'echo abort > "$1"' _ "$M/$S/.control"
timeout -k 5 60 "$VDI" exec -q -D "$DATA" -t 30000 "BACKUP DATABASE db TO VIRTUAL_DEVICE='$S'" 2>"$T/exec.err" &
E=$!
BG+=($E)
check "owner: reads the backup through the device" timeout -k 5 60 cp "$M/$S/$S" "$T/m1.bak"
check "owner: the server succeeds" wait $E
check "owner: set done" grep -q '^state: done' "$M/$S/.status"
rmdir "$M/$S"
umount_all

# ----------------------------------------------------------------------
say "4. a vdifs mount with allow_other,group=$GROUP"
M=$T/m2
mount_fs "$M" -o allow_other,group=$GROUP,devices=2,open_timeout=30000 && chmod 755 "$M"
new_set
S=$SET
mkdir "$M/$S"
check "set directory 0770 and device 0660, group $GROUP" \
	test "$(stat -c '%a %G' "$M/$S") $(stat -c '%a %G' "$M/$S/$S")" = "770 $GROUP 660 $GROUP"
check "set's shared memory 0660, group $GROUP" test "$(stat -c '%a %G' "$(shm "$S")")" = "660 $GROUP"
fails_with "uid outside the group: read a device file" "Permission denied" \
	as_other timeout -k 2 10 cat "$M/$S/$S"
fails_with "uid outside the group: write a device file" "Permission denied" \
	as_other timeout -k 2 10 sh -c 'echo x > "$1"' _ "$M/$S/$S"
timeout -k 5 60 "$VDI" exec -q -D "$DATA" -t 30000 \
	"BACKUP DATABASE db TO VIRTUAL_DEVICE='$S', VIRTUAL_DEVICE='${S}1' WITH MAXTRANSFERSIZE=131072" 2>"$T/exec.err" &
E=$!
BG+=($E)
touch "$T/mb.0" "$T/mb.1"
chmod 666 "$T/mb.0" "$T/mb.1"
as_member timeout -k 5 60 dd if="$M/$S/${S}1" of="$T/mb.1" bs=1M conv=notrunc status=none &
R=$!
BG+=($R)
check "group member: reads device 0" as_member timeout -k 5 60 dd if="$M/$S/$S" of="$T/mb.0" bs=1M conv=notrunc status=none
check "group member: reads device 1" wait $R
check "backup through the member's reads: server succeeds" wait $E
rmdir "$M/$S"
new_set
S=$SET
mkdir "$M/$S"
rm -f "$DATA/m.mdf"
timeout -k 5 60 "$VDI" exec -q -D "$DATA" -t 30000 \
	"RESTORE DATABASE m FROM VIRTUAL_DEVICE='$S', VIRTUAL_DEVICE='${S}1'" 2>"$T/exec.err" &
E=$!
BG+=($E)
as_member timeout -k 5 60 sh -c 'cat "$1" > "$2"' _ "$T/mb.1" "$M/$S/${S}1" &
R=$!
BG+=($R)
check "group member: writes device 0" as_member timeout -k 5 60 sh -c 'cat "$1" > "$2"' _ "$T/mb.0" "$M/$S/$S"
check "group member: writes device 1" wait $R
check "restore through the member's writes: server succeeds" wait $E
check "restored database identical" cmp -s "$DATA/db.mdf" "$DATA/m.mdf"
rmdir "$M/$S"

# ----------------------------------------------------------------------
say "5. names with path tricks"
long=$TAG-$(printf 'L%.0s' $(seq 130))
names=("../$TAG-up" "$TAG-a/b" "$TAG-a\\b" "$long" "$TAG-a"$'\t'"b" "$TAG-a"$'\n'"b"
	"$TAG-"$'\e'"[2J" "$TAG-a"$'\x7f'"b" "." ".." "")
whys=("must not contain '/' or '\\'" "must not contain '/' or '\\'" "must not contain '/' or '\\'"
	"is longer than 127 bytes" "must not contain control characters" "must not contain control characters"
	"must not contain control characters" "must not contain control characters"
	"must not be '.' or '..'" "must not be '.' or '..'" "must not be empty")
snap() { { ls -A "$T/cwd" "$DATA" "$T"; ls /dev/shm | grep -E "^vdi[.-](b[0-9]+\\.)?MSSQLSERVER\\.\\.*$" ; ours; } 2>&1 | md5sum; }
before=$(snap)
for i in "${!names[@]}"; do
	n=${names[$i]}
	shown=$(printf '%q' "$n")
	shown=${shown:0:48}
	out=$(cd "$T/cwd" && timeout -k 5 20 "$VDI" pipe -q -s "$n" -t 2000 </dev/null 2>&1)
	rc=$?
	if [ $rc -eq 2 ] && [[ $out == "vdi: invalid set name "*"${whys[$i]}"* ]]; then
		pass "vdi pipe -s $shown: refused (${whys[$i]})"
	else
		fail "vdi pipe -s $shown: exit $rc: $out"
	fi
	# The message quotes the name escaped: no raw control byte (an ESC
	# would drive the user's terminal).  One trailing newline only.
	if printf '%s' "$out" | LC_ALL=C grep -q '[[:cntrl:]]'; then
		fail "vdi pipe -s $shown: message carries raw control bytes: $(printf '%q' "$out")"
	else
		pass "vdi pipe -s $shown: message has no raw control bytes"
	fi
	out=$(cd "$T/cwd" && timeout -k 5 20 "$VDI" exec -q -D "$DATA" -t 2000 \
		"BACKUP DATABASE db TO VIRTUAL_DEVICE='$n'" 2>&1)
	rc=$?
	if [ $rc -eq 2 ] && [[ $out == "vdi: invalid VIRTUAL_DEVICE "*"${whys[$i]}"* ]]; then
		pass "vdi exec VIRTUAL_DEVICE=$shown: refused"
	else
		fail "vdi exec VIRTUAL_DEVICE=$shown: exit $rc: $out"
	fi
	# the database name is a file name too: RESTORE must not write outside
	new_set
	out=$(cd "$T/cwd" && timeout -k 5 20 "$VDI" exec -q -D "$DATA" -t 2000 \
		"RESTORE DATABASE [$n] FROM VIRTUAL_DEVICE='$SET'" 2>&1)
	rc=$?
	if [ $rc -eq 2 ] && [[ $out == "vdi: invalid database name "*"${whys[$i]}"* ]]; then
		pass "vdi exec RESTORE DATABASE [$shown]: refused"
	else
		fail "vdi exec RESTORE DATABASE [$shown]: exit $rc: $out"
	fi
done
check "vdi pipe / vdi exec: nothing created (no /dev/shm object, no file)" test "$(snap)" = "$before"
[ -e "$T/$TAG-up" ] || [ -e "$T/$TAG-up.mdf" ] && fail "a file was created outside the data directory"

# mkdir in the mount: names with '/' never reach vdifs as one name (the
# kernel walks the path), so "a/b" is ENOENT; "../x" would leave the
# mount, so it is not a name for vdifs at all.
msnap() { { ls -A "$M" "$M/.config"; ours; } 2>&1 | md5sum; }
mbefore=$(msnap)
mk() { # name "errno text"
	local what
	what="mkdir $(printf '%q' "$1" | cut -c1-48)"
	fails_with "$what" "$2" mkdir "$M/$1"
}
mk "$TAG-a/b" "No such file or directory"
mk "$TAG-a\\b" "Invalid argument"
mk "$long" "File name too long"
mk "$TAG-$(printf 'x%.0s' $(seq 300))" "File name too long"
mk "$TAG-a"$'\t'"b" "Invalid argument"
mk "$TAG-a"$'\n'"b" "Invalid argument"
mk "$TAG-"$'\e'"[2J" "Invalid argument"
mk "$TAG-a"$'\x7f'"b" "Invalid argument"
mk "." "File exists"
mk ".." "File exists"
check "mkdir: nothing created (no directory, no /dev/shm object)" test "$(msnap)" = "$mbefore"
check "the mount's .status names the refused name" grep -q "^last-error: mkdir '.*': not a valid set name" "$M/.status"
umount_all
check "nothing of ours left in /dev/shm" test -z "$(ours)"
exit 0
