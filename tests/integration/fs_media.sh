#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# fs_media.sh - issue 12 "The clients", F35: tape, disk and removable
# media through a vdifs mount, against `vdi exec`, with 1 and 4 devices.
#   tape              cp of each device file out and back: the file is an
#                     AWS tape image with filemarks, the restore is
#                     byte-identical
#   disk              the same with VDF_RandomAccess
#   pipe+removable    volume_size= splits each device into media <dev>,
#   tape+removable    <dev>.1, ...: cat each until the next does not
#                     appear; restore by writing them in order
#   a medium missing  writing <dev>.2 after <dev> is refused, the set and
#                     the server fail, the database is untouched
# fs_sqlvdi.sh runs it again over the sqlvdi backend.
. "$(dirname "$0")/fs_lib.bash"

command -v python3 >/dev/null || { say "FAIL: python3 is needed"; exit 1; }
fs_mount || exit 1
make_db db $((5 * 1024 * 1024 + 4321))
# 128 KiB transfers: a tape block spans two AWS chunks
W="BLOCKSIZE=4096, BUFFERCOUNT=8, MAXTRANSFERSIZE=131072"
VOL=512k
# a tape restore reads whole blocks: the backup's transfer size
WR="BLOCKSIZE=4096, MAXTRANSFERSIZE=131072"

# aws_check FILE: a well-formed AWS tape image (every header chains to
# the previous chunk, records begin and end, nothing after the last
# header); prints "<records> <filemarks>"
aws_check() {
	python3 - "$1" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
p = prev = recs = marks = 0
inrec = False
while p < len(data):
    if p + 6 > len(data):
        sys.exit("%s: header cut at byte %d" % (sys.argv[1], p))
    cur, prv, flags, zero = struct.unpack_from("<HHBB", data, p)
    if prv != prev or zero:
        sys.exit("%s: bad header at byte %d (prev %d, want %d)" % (sys.argv[1], p, prv, prev))
    if flags & 0x40:
        if inrec or cur:
            sys.exit("%s: filemark inside a record at byte %d" % (sys.argv[1], p))
        marks += 1
    else:
        if bool(flags & 0x80) == inrec:
            sys.exit("%s: record flags 0x%x out of order at byte %d" % (sys.argv[1], flags, p))
        inrec = not (flags & 0x20)
        recs += 1 if flags & 0x80 else 0
    p += 6 + cur
    prev = cur
if p != len(data) or inrec:
    sys.exit("%s: image ends inside a record" % sys.argv[1])
print(recs, marks)
PY
}

# mkset NDEV FEATURES [VOLUME_SIZE]: a set of that configuration; SET,
# DEVS (its device names)
mkset() {
	local k
	new_set
	printf 'devices=%s features=%s%s\n' "$1" "$2" "${3:+ volume_size=$3}" >"$MNT/.config/$SET" ||
		{ fail "config of $SET ($*)"; return 1; }
	mkdir "$MNT/$SET" || { fail "mkdir $SET"; return 1; }
	DEVS=("$SET")
	for k in $(seq 1 $(($1 - 1))); do DEVS+=("$SET$k"); done
}

# vds: the VIRTUAL_DEVICE clauses of DEVS
vds() {
	local v
	v=$(printf "VIRTUAL_DEVICE='%s', " "${DEVS[@]}")
	echo "${v%, }"
}

# read_media DIR DEV OUT: cat <dev>, <dev>.1, ... into OUT.0, OUT.1, ...
# while the next medium file appears; OUT.count is how many
read_media() {
	local m=0 f=$2
	while [ -e "$1/$f" ]; do
		cat "$1/$f" >"$3.$m" || return 1
		m=$((m + 1))
		f=$2.$m
	done
	echo "$m" >"$3.count"
}

# write_media DIR DEV OUT: writes OUT.0, OUT.1, ... into <dev>, <dev>.1, ...
write_media() {
	local m n
	n=$(cat "$3.count")
	for m in $(seq 0 $((n - 1))); do
		cat "$3.$m" >"$1/$2$([ "$m" -gt 0 ] && echo ".$m")" || return 1
	done
}

# backup LABEL NDEV FEATURES VOLUME_SIZE TOOL: TOOL cp (one file per
# device) or media (read_media); the device files go to $T/b.<k>.<m>
backup() {
	local label=$1 ndev=$2 feat=$3 vol=$4 tool=$5 k pids=() rcs=0 d
	mkset "$ndev" "$feat" "$vol" || return 1
	rm -f "$T"/b.*
	server_start "BACKUP DATABASE db TO $(vds) WITH $W"
	for k in "${!DEVS[@]}"; do
		d=$MNT/$SET/${DEVS[$k]}
		if [ "$tool" = cp ]; then
			timeout -k 5 60 bash -c 'cp "$1" "$2.0" && echo 1 > "$2.count"' _ "$d" "$T/b.$k" &
		else
			timeout -k 5 60 bash -c "$(declare -f read_media); read_media \"\$@\"" _ \
				"$MNT/$SET" "${DEVS[$k]}" "$T/b.$k" &
		fi
		pids+=($!)
	done
	for k in "${pids[@]}"; do wait "$k" || rcs=$((rcs + 1)); done
	check "$label: backup: every reader succeeded" test "$rcs" -eq 0
	check "$label: backup: server succeeded" server_wait
	check "$label: backup: set done" test "$(status_field "$MNT/$SET" state)" = done
	cp "$MNT/$SET/.status" "$T/status.backup"
	ls "$MNT/$SET" >"$T/ls.backup"
	rmdir "$MNT/$SET" || fail "rmdir $SET"
}

# restore LABEL NDEV FEATURES TOOL DB [WITH]: writes $T/b.<k>.<m> back
restore() {
	local label=$1 ndev=$2 feat=$3 tool=$4 db=$5 with=${6:-$WR} k pids=() rcs=0
	mkset "$ndev" "$feat" || return 1
	server_start "RESTORE DATABASE $db FROM $(vds)${with:+ WITH $with}"
	for k in "${!DEVS[@]}"; do
		if [ "$tool" = cp ]; then
			timeout -k 5 60 cp "$T/b.$k.0" "$MNT/$SET/${DEVS[$k]}" &
		else
			timeout -k 5 60 bash -c "$(declare -f write_media); write_media \"\$@\"" _ \
				"$MNT/$SET" "${DEVS[$k]}" "$T/b.$k" &
		fi
		pids+=($!)
	done
	for k in "${pids[@]}"; do wait "$k" || rcs=$((rcs + 1)); done
	check "$label: restore: every writer succeeded" test "$rcs" -eq 0
	check "$label: restore: server succeeded" server_wait
	check "$label: restore: set done" test "$(status_field "$MNT/$SET" state)" = done
	check "$label: restore: database byte-identical" same "$DATA/$db.mdf" "$DATA/db.mdf"
	rmdir "$MNT/$SET" || fail "rmdir $SET"
}

# media_counts NDEV: every device's medium count, blank-separated
media_counts() {
	local k
	for k in $(seq 0 $(($1 - 1))); do printf '%s ' "$(cat "$T/b.$k.count" 2>/dev/null)"; done
}

n=0
for ndev in 1 4; do
	# --- tape: cp out, an AWS image with filemarks, cp back -------
	n=$((n + 1))
	backup "tape, $ndev dev" "$ndev" tape "" cp
	bad=0
	for k in $(seq 0 $((ndev - 1))); do
		read -r recs marks < <(aws_check "$T/b.$k.0") && [ "${recs:-0}" -gt 0 ] &&
			[ "${marks:-0}" -gt 0 ] || { bad=$((bad + 1)); say "  device $k: '${recs:-} ${marks:-}'"; }
	done
	check "tape, $ndev dev: every device file is an AWS tape image with records and filemarks" \
		test "$bad" -eq 0
	check "tape, $ndev dev: no tar file for a tape set" eval '! grep -qx "$SET.tar" "$T/ls.backup"'
	restore "tape, $ndev dev" "$ndev" tape cp "r$n"

	# --- disk --------------------------------------------------------
	n=$((n + 1))
	backup "disk, $ndev dev" "$ndev" disk "" cp
	check "disk, $ndev dev: the stripes hold the database" \
		test "$(cat "$T"/b.*.0 | wc -c)" -gt $((5 * 1024 * 1024))
	restore "disk, $ndev dev" "$ndev" disk cp "r$n"

	# --- removable media: cat each medium, write them back in order -
	for feat in pipe+removable tape; do
		n=$((n + 1))
		label="$feat, $ndev dev, volume_size=$VOL"
		backup "$label" "$ndev" "$feat" "$VOL" media
		counts=$(media_counts "$ndev")
		check "$label: every device spans several media ($counts)" \
			eval '! printf "%s\n" $counts | grep -qvE "^([2-9]|[1-9][0-9]+)$"'
		bad=0
		for f in "$T"/b.*.[0-9]*; do
			[ "${f##*.}" = count ] && continue
			[ "$(stat -c %s "$f")" -le 524288 ] || bad=$((bad + 1))
			if [ "$feat" = tape ]; then aws_check "$f" >/dev/null || bad=$((bad + 1)); fi
		done
		check "$label: no medium holds more than volume_size${feat/pipe+removable/}${feat/tape/, each an AWS image}" \
			test "$bad" -eq 0
		check "$label: .status shows the last medium of device 0" \
			grep -qE "^medium: $SET $(($(cat "$T/b.0.count") - 1)) $SET(\.[0-9]+)? done$" "$T/status.backup"
		check "$label: the medium files were listed, no tar file" \
			eval 'grep -qx "$SET.1" "$T/ls.backup" && ! grep -qx "$SET.tar" "$T/ls.backup"'
		restore "$label" "$ndev" "$feat" media "r$n"
	done
done

# --- a medium missing: refused, the set and the server fail ---------
label="medium missing"
backup "$label" 1 pipe+removable "$VOL" media
echo "not a database" >"$DATA/keep.mdf"
cp "$DATA/keep.mdf" "$T/keep.orig"
mkset 1 pipe+removable
server_start "RESTORE DATABASE keep FROM $(vds) WITH REPLACE, $WR"
check "$label: medium 0 written" timeout -k 5 60 cp "$T/b.0.0" "$MNT/$SET/$SET"
out=$(timeout -k 5 60 cp "$T/b.0.2" "$MNT/$SET/$SET.2" 2>&1)
check "$label: writing $SET.2 before $SET.1 is refused with EINVAL ($out)" \
	eval 'case $out in *"Invalid argument"*) true ;; *) false ;; esac'
check "$label: the server fails" eval '! server_wait'
check "$label: the set failed and says why" \
	eval 'test "$(status_field "$MNT/$SET" state)" = failed &&
	      status_field "$MNT/$SET" last-error | grep -q "out of order.*expects .$SET.1. next"'
check "$label: the log names the medium file" grep -q "medium file '$SET.2' out of order" "$T/vdifs.log"
check "$label: the database is untouched" same "$DATA/keep.mdf" "$T/keep.orig"
rmdir "$MNT/$SET" || fail "rmdir $SET"

# --- both media directions configured (D18): the opener's direction -
label="both media"
EXEC_OPTS=--both-media backup "$label" 1 pipe "" cp
check "$label: the stripe holds the database" test "$(stat -c %s "$T/b.0.0")" -gt $((5 * 1024 * 1024))
EXEC_OPTS=--both-media restore "$label" 1 pipe cp rboth
label="both media, removable, volume_size=$VOL"
EXEC_OPTS=--both-media backup "$label" 1 pipe+removable "$VOL" media
check "$label: the device spans several media ($(media_counts 1))" test "$(cat "$T/b.0.count")" -ge 2
EXEC_OPTS=--both-media restore "$label" 1 pipe+removable media rbothm

rm -f "$T"/b.*
check_nothing_left
