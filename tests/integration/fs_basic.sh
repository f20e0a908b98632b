#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# fs_basic.sh - issue 4 items 1, 2, 3, 5, 9, 10 without data: mounting
# (also as fstab type fuse.vdifs), set names and their errno, per-set
# configuration, rmdir rules, status and abort files, device attributes,
# metadata calls ignored, access rules, -d request lines, shared memory.
. "$(dirname "$0")/fs_lib.bash"

# errno_of CMD...: the strerror text the command printed
expect_err() { # "what" "strerror text" cmd...
	local what=$1 text=$2 out
	shift 2
	out=$("$@" 2>&1) && { fail "$what: succeeded"; return; }
	case $out in
	*"$text"*) pass "$what ($text)" ;;
	*) fail "$what: expected '$text', got: $out" ;;
	esac
}
shm_of() { echo "/dev/shm/vdi.MSSQLSERVER.$1"; }

chmod 755 "$T"
fs_mount -o group=daemon,open_timeout=2000 || exit 1

check "mounted as fuse.vdifs" eval 'grep -q " $MNT fuse.vdifs " /proc/mounts'
check "root shows .status and .config" test -f "$MNT/.status" -a -d "$MNT/.config"

# --- set names -------------------------------------------------------
expect_err "backslash in a set name" "Invalid argument" mkdir "$MNT/a\\b"
expect_err "control character in a set name" "Invalid argument" mkdir "$MNT/$(printf 'a\tb')"
long=$(printf 'x%.0s' $(seq 128))
expect_err "128-byte set name" "File name too long" mkdir "$MNT/$long"
new_set
name127=$SET-$(printf 'y%.0s' $(seq $((127 - ${#SET} - 1))))
check "127-byte set name accepted" mkdir "$MNT/$name127"
check "127-byte set: its device" test -e "$MNT/$name127/$name127"
rmdir "$MNT/$name127"
printf 'devices=2\n' >"$MNT/.config/$name127"
expect_err "127-byte set name with 2 devices (device '<set>1' too long)" \
	"File name too long" mkdir "$MNT/$name127"
rm "$MNT/.config/$name127"

new_set
S=$MNT/$SET
check "mkdir creates a set" mkdir "$S"
expect_err "mkdir of an existing set" "File exists" mkdir "$S"
expect_err "mkdir inside a set" "Operation not permitted" mkdir "$S/sub"
check "shared memory of the set exists, mode 0660, group daemon" \
	test "$(stat -c '%a %G' "$(shm_of "$SET")")" = "660 daemon"
new_set
"$VDI" pipe -q -s "$SET" -t 20000 >/dev/null 2>&1 &
PIPE=$!
bg_track "$PIPE"
for i in $(seq 40); do [ -e "$(shm_of "$SET")" ] && break; sleep 0.05; done
expect_err "mkdir of a set another client owns" "File exists" mkdir "$MNT/$SET"
kill "$PIPE"
wait "$PIPE" 2>/dev/null

# --- attributes ------------------------------------------------------
D=$S/${S##*/}
check "device attributes: regular, size 0, 0 blocks, blksize 1 MiB before configuration" \
	test "$(stat -c '%F %s %b %o' "$D")" = "regular empty file 0 0 1048576"
check "group mode: set dir 0770, device 0660, group daemon" \
	test "$(stat -c '%a %G' "$S") $(stat -c '%a %G' "$D")" = "770 daemon 660 daemon"
check "touch -c on a device accepted" touch -c -d @1000000000 "$D"
check "chmod on a device accepted" chmod 600 "$D"
check "chown on a device accepted" chown "$(id -u):$(id -g)" "$D"
check "truncate(2) to 0 on a device accepted" python3 -c 'import os,sys; os.truncate(sys.argv[1], 0)' "$D"
expect_err "truncate(2) to 100 refused" "Invalid argument" \
	python3 -c 'import os,sys; os.truncate(sys.argv[1], 100)' "$D"
check "unlink of a device hides it" eval 'rm "$D" && ! ls "$S" | grep -qx "${S##*/}"'
expect_err "unlink again" "No such file" rm "$D"
check "status: waiting, one device" eval 'grep -q "^state: waiting" "$S/.status" && grep -q "^devices: 1" "$S/.status"'
check "root status lists the set" grep -q "^set: ${S##*/}\$" "$MNT/.status"

# --- open timeout ------------------------------------------------------
new_set
mkdir "$MNT/$SET"
t0=$(date +%s%N)
expect_err "open with no server times out (open_timeout=2000)" "Connection timed out" \
	timeout 10 cat "$MNT/$SET/$SET"
dt=$((($(date +%s%N) - t0) / 1000000))
check "open timeout took about 2 s ($dt ms)" test "$dt" -ge 1900 -a "$dt" -lt 5000
check "set still waiting after the timeout" grep -q "^state: waiting" "$MNT/$SET/.status"
rmdir "$MNT/$SET"

# --- per-set configuration --------------------------------------------
new_set
expect_err "bad key in .config" "Invalid argument" \
	bash -c 'printf "devices=2 colour=blue\n" > "$1"' _ "$MNT/.config/$SET"
expect_err "bad value in .config" "Invalid argument" \
	bash -c 'printf "devices=65\n" > "$1"' _ "$MNT/.config/$SET"
check "valid .config accepted" bash -c 'printf "devices=3\nfeatures=pipe+nocomplete # comment\nserver_timeout=5000\n" > "$1"' _ "$MNT/.config/$SET"
check ".config reads back" grep -q "^devices=3" "$MNT/.config/$SET"
mkdir "$MNT/$SET"
check "per-set devices=3: devices <set>, <set>1, <set>2, and <set>.tar" \
	test "$(ls "$MNT/$SET" | sort | tr '\n' ' ')" = "$(printf '%s\n' "$SET" "${SET}1" "${SET}2" "$SET.tar" | sort | tr '\n' ' ')"
check "per-set config shown in .status" \
	grep -q "^config: devices=3 features=pipe+nocomplete open_timeout=2000 server_timeout=5000" "$MNT/$SET/.status"
rmdir "$MNT/$SET"
rm "$MNT/.config/$SET"
check ".config file removed" test ! -e "$MNT/.config/$SET"

# --- a set offers only what vdifs answers (F31, F35) -----------------
new_set
for f in 0x133 tape+disk pipe+tape disk+pipe 0x10 0x40 0x2173+0x80 tape+frob; do
	expect_err "features=$f refused" "Invalid argument" \
		bash -c 'printf "features=%s\n" "$2" > "$1"' _ "$MNT/.config/$SET" "$f"
done
check "... and /.status says why" grep -q "^last-error: .config: option 'features': unknown word 'frob'" "$MNT/.status"
expect_err "features=0x133 refused" "Invalid argument" \
	bash -c 'printf "features=0x133\n" > "$1"' _ "$MNT/.config/$SET"
check "... a tape is VDF_LikeTape whole" \
	grep -q "^last-error: .config: option 'features': '0x133' is not offered: the device type bits 0x133" "$MNT/.status"
expect_err "volume_size without removable refused" "Invalid argument" \
	bash -c 'printf "features=disk volume_size=1m\n" > "$1"' _ "$MNT/.config/$SET"
check "... and /.status says why" grep -q "^last-error: .config: option 'volume_size' needs removable media" "$MNT/.status"
for f in pipe+discard tape disk pipe+removable disk+removable+discard 0x2173 "tape volume_size=64k"; do
	check "features=$f accepted" bash -c 'printf "features=%s\n" "$2" > "$1"' _ "$MNT/.config/$SET" "$f"
done
mkdir "$MNT/$SET"
check "tape: config shown in .status" \
	grep -q "^config: devices=1 features=tape+complete volume_size=65536 " "$MNT/$SET/.status"
check "tape: no $SET.tar (a tar member cannot carry a tape image)" \
	test "$(ls "$MNT/$SET" | tr '\n' ' ')" = "$SET "
rmdir "$MNT/$SET"
rm -f "$MNT/.config/$SET"

# --- rmdir rules and abort from the shell -----------------------------
new_set
mkdir "$MNT/$SET"
server_start "BACKUP DATABASE nodb TO VIRTUAL_DEVICE='$SET'"
make_db nodb 100000
for i in $(seq 100); do grep -q "^state: active" "$MNT/$SET/.status" && break; sleep 0.05; done
check "server attached: state active" grep -q "^state: active" "$MNT/$SET/.status"
expect_err "rmdir of a set with a server attached" "Device or resource busy" rmdir "$MNT/$SET"
check "abort from the shell" bash -c 'echo abort > "$1/.control"' _ "$MNT/$SET"
check "aborted set: server fails" eval '! server_wait'
check "aborted set: status failed, says so" \
	eval 'grep -q "^state: failed" "$MNT/$SET/.status" && grep -q "^last-error: aborted from .control" "$MNT/$SET/.status"'
expect_err "unknown control word" "Invalid argument" bash -c 'echo frobnicate > "$1/.control"' _ "$MNT/$SET"
check "rmdir of the aborted set" rmdir "$MNT/$SET"
check "its shared memory is gone" test ! -e "$(shm_of "$SET")"
check "rmdir of a waiting set" rmdir "$S"

# --- rmdir right after the transfer (RELEASE comes after close) -------
# A restore writer's stream ends at its RELEASE, which the kernel sends
# after close(2) returned; the server may exit while that RELEASE is
# still finishing in the daemon, and rmdir then waits for it (load.sh
# used to retry around this EBUSY).
make_db tiny 300000
new_set
printf 'devices=2\n' >"$MNT/.config/$SET"
mkdir "$MNT/$SET"
server_start "BACKUP DATABASE tiny TO VIRTUAL_DEVICE='$SET', VIRTUAL_DEVICE='${SET}1'"
timeout 30 cat "$MNT/$SET/$SET" >"$T/tiny0" & timeout 30 cat "$MNT/$SET/${SET}1" >"$T/tiny1"
wait $!
server_wait
rmdir "$MNT/$SET"
rm -f "$MNT/.config/$SET"
ok=0
for i in $(seq 20); do
	new_set
	printf 'devices=2\n' >"$MNT/.config/$SET"
	mkdir "$MNT/$SET"
	server_start "RESTORE DATABASE tiny$i FROM VIRTUAL_DEVICE='$SET', VIRTUAL_DEVICE='${SET}1'"
	timeout 30 cp "$T/tiny0" "$MNT/$SET/$SET" & timeout 30 cp "$T/tiny1" "$MNT/$SET/${SET}1"
	wait $!
	server_wait && rmdir "$MNT/$SET" 2>/dev/null && ok=$((ok + 1))
	[ -d "$MNT/$SET" ] && { echo abort >"$MNT/$SET/.control"; rmdir "$MNT/$SET"; }
	rm -f "$MNT/.config/$SET" "$DATA/tiny$i.mdf"
done
check "rmdir at once after a restore's writers and server exited: $ok of 20" test "$ok" -eq 20

# --- access ------------------------------------------------------------
new_set
mkdir "$MNT/$SET"
expect_err "other user without allow_other" "Permission denied" \
	setpriv --reuid 65534 --regid 65534 --clear-groups ls "$MNT/"
rmdir "$MNT/$SET"
fs_umount
fs_mount -o allow_other -d || exit 1
new_set
mkdir "$MNT/$SET"
check "allow_other: other user may list the root" \
	eval 'setpriv --reuid 65534 --regid 65534 --clear-groups ls "$MNT/" >/dev/null'
expect_err "allow_other: other user stopped by the set's mode 0700" "Permission denied" \
	setpriv --reuid 65534 --regid 65534 --clear-groups ls "$MNT/$SET"
check "-d: one line per request with id, op, size, result, latency" \
	grep -Eq "req [0-9]+ mkdir ino 1 size 0 -> [0-9]+ [0-9]+us" "$T/vdifs.log"
rmdir "$MNT/$SET"

# --- the client backend per set (issue 9) -------------------------------
if [ -e "$BDIR/libsqlvdi.so" ]; then
	new_set
	check "per-set sqlvdi: .config accepted" \
		bash -c 'printf "sqlvdi=%s\n" "$2" > "$1"' _ "$MNT/.config/$SET" "$BDIR/libsqlvdi.so"
	mkdir "$MNT/$SET"
	check "per-set sqlvdi: .status names the backend" \
		grep -qx "backend: sqlvdi:$BDIR/libsqlvdi.so" "$MNT/$SET/.status"
	make_db sq 300000
	server_start "BACKUP DATABASE sq TO VIRTUAL_DEVICE='$SET'"
	timeout 30 cat "$MNT/$SET/$SET" >"$T/sq.bak"
	check "per-set sqlvdi: a backup through it" server_wait
	check "per-set sqlvdi: the set is done" grep -q "^state: done" "$MNT/$SET/.status"
	rmdir "$MNT/$SET"
	new_set
	check "a libvdi set beside it: backend libvdi" \
		eval 'mkdir "$MNT/$SET" && grep -qx "backend: libvdi" "$MNT/$SET/.status" && rmdir "$MNT/$SET"'
	new_set
	printf "sqlvdi=%s\n" "$T/missing.so" >"$MNT/.config/$SET"
	expect_err "per-set sqlvdi with a missing library: mkdir refused" "Invalid argument" mkdir "$MNT/$SET"
	check "... and /.status says which library: $(sed -n 's/^last-error: //p' "$MNT/.status")" \
		eval 'grep -q "^last-error: mkdir .*$T/missing.so.*cannot be loaded" "$MNT/.status"'
	expect_err "sqlvdi with group= in a .config" "Invalid argument" \
		bash -c 'printf "sqlvdi group=daemon\n" > "$1"' _ "$MNT/.config/$SET"
	expect_err "sqlvdi with a relative path" "Invalid argument" \
		bash -c 'printf "sqlvdi=lib.so\n" > "$1"' _ "$MNT/.config/$SET"
	rm -f "$MNT/.config/$SET"
else
	say "no libsqlvdi.so (no C++ compiler): the per-set backend cases are skipped"
fi
fs_umount

# --- fstab: mount.fuse3 runs "vdifs SOURCE MOUNTPOINT -o OPTIONS" ------
# The same command line as the helper of `mount -t fuse.vdifs` (type
# fuse.vdifs in /etc/fstab), daemonized.
fstab_case() { # how to mount
	local pid
	if ! "$@"; then
		fail "fstab-style mount: $*"
		return
	fi
	pid=$(pgrep -f "vdifs $MNT -o devices=2|vdifs vdifs $MNT" | head -n 1)
	new_set
	mkdir "$MNT/$SET"
	check "fstab-style mount ($1): options applied (devices=2)" test -e "$MNT/$SET/${SET}1"
	check "fstab-style mount: type fuse.vdifs" eval 'grep -q " $MNT fuse.vdifs " /proc/mounts'
	rmdir "$MNT/$SET"
	check "fstab-style mount unmounts" fusermount3 -u "$MNT"
	[ -n "$pid" ] && check "its daemon exits" wait_gone "$pid" 5
}
fstab_case timeout 10 "$VDIFS" vdifs "$MNT" -o devices=2,open_timeout=1000
if [ "$(id -u)" -eq 0 ] && [ -x /sbin/mount.fuse3 ] &&
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v vdifs >/dev/null; then
	fstab_case timeout 10 mount -t fuse.vdifs vdifs "$MNT" -o devices=2
else
	say "vdifs not installed: the real 'mount -t fuse.vdifs' case is skipped"
fi

check_nothing_left
