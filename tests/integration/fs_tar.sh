#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# fs_tar.sh - issue 14: a whole set as one standard tar stream, out and
# back in, through vdifs (<set>.tar, tar -x into the set directory) and
# through `vdi pipe --tar`, against `vdi exec`:
#   - backups of 1 and 4 devices read by one cat, checked with GNU tar
#     (-t, -xO per device, -x) and Python's tarfile; every way of taking
#     the streams out restores a byte-identical database;
#   - restores by cat into <set>.tar, by tar -x -C, by vdi pipe --tar;
#   - bad archives (members out of order, a missing member, an unknown
#     device, truncated, garbage): the restore fails on both sides with
#     the member and the offset, and no database appears;
#   - a reader killed mid-archive fails the backup; the tar file and the
#     device files exclude each other.
. "$(dirname "$0")/fs_lib.bash"

command -v python3 >/dev/null || { say "FAIL: python3 is needed"; exit 1; }
fs_mount -o devices=4 || exit 1
make_db db $((9 * 1024 * 1024 + 4321))

# vds SET N: the VIRTUAL_DEVICE clauses of a set of N devices
vds() {
	local s=$1 n=$2 k out="VIRTUAL_DEVICE='$1'"
	for k in $(seq 1 $((n - 1))); do out="$out, VIRTUAL_DEVICE='$s$k'"; done
	printf '%s' "$out"
}
# devset N: a new set of N devices (devices=N in its .config)
devset() {
	new_set
	printf 'devices=%s\n' "$1" >"$MNT/.config/$SET"
	mkdir "$MNT/$SET"
}
endset() {
	rmdir "$MNT/$SET" 2>/dev/null || { echo abort >"$MNT/$SET/.control"; rmdir "$MNT/$SET"; }
	rm -f "$MNT/.config/$SET"
}

# backup_tar N FILE: a backup of db over N devices into one archive
backup_tar() {
	local n=$1 out=$2
	devset "$n"
	BSET=$SET
	server_start "BACKUP DATABASE db TO $(vds "$SET" "$n") WITH MAXTRANSFERSIZE=1048576"
	timeout -k 5 60 cat "$MNT/$SET/$SET.tar" >"$out"
	local crc=$?
	check "$n-device backup into $SET.tar: cat succeeded" test "$crc" -eq 0
	check "$n-device backup into $SET.tar: server succeeded" server_wait
	check "$n-device backup into $SET.tar: set done" test "$(status_field "$MNT/$SET" state)" = done
	endset
}

# restore_with N NEWDB 'command using $SETDIR, $SETNAME' : restore into
# the set of the backup's name (BSET)
restore_with() {
	local n=$1 db=$2 cmd=$3 crc
	rm -f "$DATA/$db.mdf"
	SET=$BSET
	printf 'devices=%s\n' "$n" >"$MNT/.config/$SET"
	mkdir "$MNT/$SET"
	export SETDIR=$MNT/$SET SETNAME=$SET
	server_start "RESTORE DATABASE $db FROM $(vds "$SET" "$n")"
	timeout -k 5 60 bash -c "$cmd"
	crc=$?
	server_wait
	RESTORE_RC=$?
	RESTORE_TOOL=$crc
	RESTORE_STATE=$(status_field "$MNT/$SET" state)
	RESTORE_ERR=$(status_field "$MNT/$SET" last-error)
	endset
}

for n in 1 4; do
	A=$T/a$n.tar
	backup_tar "$n" "$A"
	B=$BSET
	devs=("$B")
	for k in $(seq 1 $((n - 1))); do devs+=("$B$k"); done

	# --- GNU tar and Python read it ------------------------------------
	tar -tf "$A" >"$T/list" 2>"$T/tar.err"
	check "$n devices: tar -t lists members <device>.<10 digits> only" \
		eval '[ -s "$T/list" ] && ! grep -Evq "^($(IFS='|'; echo "${devs[*]}"))\.[0-9]{10}$" "$T/list"'
	check "$n devices: every device has members, each in sequence from 0" python3 - "$T/list" "${devs[@]}" <<'PY'
import sys
names = [l.strip() for l in open(sys.argv[1])]
for d in sys.argv[2:]:
    seqs = [int(n.rsplit('.', 1)[1]) for n in names if n.rsplit('.', 1)[0] == d]
    if not seqs or seqs != list(range(len(seqs))):
        sys.exit(1)
PY
	check "$n devices: Python's tarfile reads it, each device ends with an empty member" python3 - "$A" "${devs[@]}" <<'PY'
import sys, tarfile
t = tarfile.open(sys.argv[1])
ms = t.getmembers()
for d in sys.argv[2:]:
    mine = [m for m in ms if m.name.rsplit('.', 1)[0] == d]
    if not mine or mine[-1].size != 0 or any(m.size == 0 or m.size % 512 for m in mine[:-1]):
        sys.exit(1)
    if not all(m.isreg() for m in mine):
        sys.exit(1)
PY
	for k in "${!devs[@]}"; do
		tar -xOf "$A" --wildcards "${devs[$k]}.*" >"$T/xo.$k"
		python3 - "$A" "${devs[$k]}" "$T/py.$k" <<'PY'
import sys, tarfile
t = tarfile.open(sys.argv[1])
with open(sys.argv[3], 'wb') as out:
    for m in sorted((m for m in t.getmembers() if m.name.rsplit('.', 1)[0] == sys.argv[2]), key=lambda m: m.name):
        out.write(t.extractfile(m).read())
PY
	done
	ok=1
	for k in "${!devs[@]}"; do same "$T/xo.$k" "$T/py.$k" || ok=0; done
	check "$n devices: tar -xO --wildcards '<device>.*' equals the members concatenated by Python" test "$ok" -eq 1
	rm -rf "$T/x" && mkdir "$T/x" && tar -xf "$A" -C "$T/x"
	ok=1
	for k in "${!devs[@]}"; do
		(cd "$T/x" && cat $(ls | grep -E "^${devs[$k]}\.[0-9]{10}$" | sort)) >"$T/cat.$k"
		same "$T/cat.$k" "$T/xo.$k" || ok=0
	done
	check "$n devices: tar -x gives files whose concatenation per device is its stream" test "$ok" -eq 1

	# --- each device's stream restores through the device files --------
	cmd='for k in $(seq 0 '$((n - 1))'); do d=$SETNAME; [ $k -gt 0 ] && d=$SETNAME$k; cat "$T/xo.$k" >"$SETDIR/$d" & done; wait'
	export T
	restore_with "$n" "xo$n" "$cmd"
	check "$n devices: the tar -xO streams restore byte-identical through the device files" \
		eval 'test $RESTORE_RC -eq 0 && same "$DATA/xo$n.mdf" "$DATA/db.mdf"'

	# --- restore into <set>.tar, and by tar -x -C ----------------------
	restore_with "$n" "rc$n" 'cat "'"$A"'" > "$SETDIR/$SETNAME.tar"'
	check "$n devices: cat archive > <set>.tar restores byte-identical" \
		eval 'test $RESTORE_RC -eq 0 && test $RESTORE_TOOL -eq 0 && same "$DATA/rc$n.mdf" "$DATA/db.mdf"'
	restore_with "$n" "rx$n" 'tar -xf "'"$A"'" -C "$SETDIR"'
	check "$n devices: tar -xf archive -C <set> restores byte-identical" \
		eval 'test $RESTORE_RC -eq 0 && test $RESTORE_TOOL -eq 0 && same "$DATA/rx$n.mdf" "$DATA/db.mdf"'
	rm -f "$DATA"/xo$n.mdf "$DATA"/rc$n.mdf "$DATA"/rx$n.mdf "$T"/xo.* "$T"/py.* "$T"/cat.*
done

# --- bad archives: both sides fail, nothing restored ------------------
A=$T/a4.tar
rm -rf "$T/x" && mkdir "$T/x" && tar -xf "$A" -C "$T/x"
B1=${BSET}1
python3 - "$A" "$T" "$BSET" <<'PY'
import sys, tarfile, io
src, T, s = sys.argv[1], sys.argv[2], sys.argv[3]
t = tarfile.open(src)
ms = t.getmembers()
data = {m.name: t.extractfile(m).read() for m in ms}
def write(path, members, rename=None):
    with tarfile.open(path, 'w', format=tarfile.USTAR_FORMAT) as out:
        for m in members:
            n = m.name if rename is None else rename(m.name)
            i = tarfile.TarInfo(n); i.size = len(data[m.name]); i.mode = 0o600
            out.addfile(i, io.BytesIO(data[m.name]))
dev1 = [m for m in ms if m.name.startswith(s + '1.')]
swap = list(ms)
a, b = swap.index(dev1[0]), swap.index(dev1[1])
swap[a], swap[b] = swap[b], swap[a]
write(T + '/bad-order.tar', swap)
write(T + '/bad-missing.tar', [m for m in ms if m is not dev1[1]])
write(T + '/bad-unknown.tar', ms, lambda n: n.replace(s + '1.', 'stranger.', 1) if n.startswith(s + '1.') else n)
write(T + '/bad-noend.tar', [m for m in ms if m is not dev1[-1]])
PY
head -c $(($(stat -c %s "$A") / 2)) "$A" >"$T/bad-truncated.tar"
head -c 3000000 /dev/urandom >"$T/bad-garbage.tar"
for bad in order:"out of sequence" missing:"out of sequence" unknown:"no device" noend:"before the end of device" \
	truncated:"truncated" garbage:"not a tar header"; do
	what=${bad%%:*} why=${bad#*:}
	restore_with 4 "bad" 'cat "$T/bad-'"$what"'.tar" > "$SETDIR/$SETNAME.tar"'
	check "bad archive ($what) into <set>.tar: the server fails, the set says '$why': $RESTORE_ERR" \
		eval 'test $RESTORE_RC -ne 0 && test "$RESTORE_STATE" = failed && case "$RESTORE_ERR" in *"$why"*) true ;; *) false ;; esac'
	check "bad archive ($what): no database restored" test ! -e "$DATA/bad.mdf"
done
restore_with 4 "bad" 'tar -xf "$T/bad-order.tar" -C "$SETDIR"'
check "bad archive (order) by tar -x -C: the server fails, the set names the member: $RESTORE_ERR" \
	eval 'test $RESTORE_RC -ne 0 && grep -Fq "member '"'"'$B1.0000000001'"'"' out of sequence" <<<"$RESTORE_ERR"'
check "bad archive (order) by tar -x -C: no database restored" test ! -e "$DATA/bad.mdf"

# --- a reader killed mid-archive; exclusion with the device files -----
devset 4
server_start "BACKUP DATABASE db TO $(vds "$SET" 4) WITH MAXTRANSFERSIZE=65536, FAULT_STALL=3000"
cat "$MNT/$SET/$SET.tar" >/dev/null & # no timeout(1): the reader itself gets the SIGKILL
R=$!
bg_track "$R"
for i in $(seq 100); do grep -q "^device: $SET.tar reading" "$MNT/$SET/.status" && break; sleep 0.05; done
check "exclusion: a device file cannot be opened while <set>.tar streams (EBUSY)" \
	eval 'cat "$MNT/$SET/${SET}2" 2>&1 >/dev/null | grep -q "Device or resource busy"'
kill -9 "$R"
wait "$R" 2>/dev/null
check "a reader of <set>.tar killed with SIGKILL: the backup fails" eval '! server_wait'
check "... and the set failed" test "$(status_field "$MNT/$SET" state)" = failed
endset
devset 2
server_start "BACKUP DATABASE db TO $(vds "$SET" 2)"
timeout 30 cat "$MNT/$SET/${SET}1" >/dev/null &
R=$!
bg_track "$R"
for i in $(seq 100); do grep -q "^device: ${SET}1 reading" "$MNT/$SET/.status" && break; sleep 0.05; done
check "exclusion: <set>.tar cannot be opened while a device file streams (EBUSY)" \
	eval 'cat "$MNT/$SET/$SET.tar" 2>&1 >/dev/null | grep -q "Device or resource busy"'
echo abort >"$MNT/$SET/.control"
wait "$R" 2>/dev/null
server_wait
endset

# --- vdi pipe --tar ------------------------------------------------------
PSET=$TAG-pipe
"$VDI" pipe --tar -s "$PSET" -n 4 "$T/p.tar" 2>"$T/pipe.err" &
P=$!
bg_track "$P"
server_start "BACKUP DATABASE db TO $(vds "$PSET" 4) WITH MAXTRANSFERSIZE=1048576"
check "vdi pipe --tar: 4-device backup, server succeeded" server_wait
check "vdi pipe --tar: backup, pipe succeeded" wait "$P"
check "vdi pipe --tar: GNU tar lists the archive" eval 'tar -tf "$T/p.tar" | grep -q "^${PSET}3\.0000000000$"'
"$VDI" pipe --tar -s "$PSET" -n 4 <"$T/p.tar" 2>"$T/pipe.err" &
P=$!
bg_track "$P"
server_start "RESTORE DATABASE pr FROM $(vds "$PSET" 4)"
check "vdi pipe --tar: restore from stdin, server succeeded" server_wait
check "vdi pipe --tar: restore, pipe succeeded" wait "$P"
check "vdi pipe --tar: database identical" same "$DATA/pr.mdf" "$DATA/db.mdf"
"$VDI" pipe --tar -s "$PSET" -n 4 <"$T/bad-garbage.tar" 2>"$T/pipe.err" &
P=$!
bg_track "$P"
server_start "RESTORE DATABASE pbad FROM $(vds "$PSET" 4)"
check "vdi pipe --tar: garbage: the server fails" eval '! server_wait'
wait "$P"
prc=$?
check "vdi pipe --tar: garbage: the pipe fails and says why: $(head -n 1 "$T/pipe.err")" \
	eval 'test $prc -eq 1 && grep -q "not a tar header" "$T/pipe.err"'
check "vdi pipe --tar: garbage: no database" test ! -e "$DATA/pbad.mdf"

rm -f "$MNT"/.config/*
check_nothing_left
