#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# fs_tools.sh - issue 4 item 4: a backup and a restore through a vdifs
# mount with every tool users reach for (cp, cat and shell redirects, dd
# with many block sizes with and without iflag=fullblock, cat | gzip,
# zstd when installed, tar -xf and tar -xOf), against `vdi exec`; the
# restored database must be byte-identical to the original.
. "$(dirname "$0")/fs_lib.bash"

fs_mount || exit 1
make_db big $((3 * 1024 * 1024 + 12345))
make_db small 20011
export T

# backup DB "WITH options" 'command using $DEV, $BAK'
backup() {
	local db=$1 with=$2 cmd=$3 crc src st
	new_set
	[ -n "${CFG:-}" ] && printf '%s\n' "$CFG" >"$MNT/.config/$SET"
	mkdir "$MNT/$SET" || { fail "mkdir $SET"; return 1; }
	export DEV=$MNT/$SET/$SET SETNAME=$SET
	server_start "BACKUP DATABASE $db TO VIRTUAL_DEVICE='$SET' WITH $with"
	timeout -k 5 60 bash -c "$cmd"
	crc=$?
	server_wait
	src=$?
	st=$(status_field "$MNT/$SET" state)
	rmdir "$MNT/$SET" || fail "rmdir of the finished set $SET"
	[ "$crc" -eq 0 ] && [ "$src" -eq 0 ] && [ "$st" = done ] && [ -s "$BAK" ] ||
		{ say "  backup: tool $crc, server $src, state '$st'"; return 1; }
}

# restore NEWDB ORIGDB "WITH options or empty" 'command using $DEV, $BAK'
restore() {
	local db=$1 orig=$2 with=$3 cmd=$4 crc src st
	new_set
	mkdir "$MNT/$SET" || { fail "mkdir $SET"; return 1; }
	export DEV=$MNT/$SET/$SET SETNAME=$SET
	server_start "RESTORE DATABASE $db FROM VIRTUAL_DEVICE='$SET'${with:+ WITH $with}"
	timeout -k 5 60 bash -c "$cmd"
	crc=$?
	server_wait
	src=$?
	st=$(status_field "$MNT/$SET" state)
	rmdir "$MNT/$SET" || fail "rmdir of the finished set $SET"
	[ "$crc" -eq 0 ] && [ "$src" -eq 0 ] && [ "$st" = done ] &&
		same "$DATA/$db.mdf" "$DATA/$orig.mdf" ||
		{ say "  restore: tool $crc, server $src, state '$st'"; return 1; }
}

n=0
# roundtrip "label" DB "backup WITH" 'backup cmd' "restore WITH" 'restore cmd'
roundtrip() {
	n=$((n + 1))
	export BAK=$T/bak.$n
	rm -f "$DATA/r$n.mdf"
	check "$1: backup" backup "$2" "$3" "$4" &&
		check "$1: restore" restore "r$n" "$2" "$5" "$6"
	rm -f "$BAK" "$BAK.gz" "$BAK.zst" "$DATA/r$n.mdf"
}

W1M="BLOCKSIZE=4096, BUFFERCOUNT=8, MAXTRANSFERSIZE=1048576"
roundtrip "cp" big "$W1M" 'cp "$DEV" "$BAK"' "" 'cp "$BAK" "$DEV"'
roundtrip "cat > file / cat file > device" big "BLOCKSIZE=512" \
	'cat "$DEV" > "$BAK"' "MAXTRANSFERSIZE=131072" 'cat "$BAK" > "$DEV"'
roundtrip "shell append redirect (O_APPEND)" big "BLOCKSIZE=4096" \
	'cat < "$DEV" > "$BAK"' "" 'cat "$BAK" >> "$DEV"'
roundtrip "dd bs=1M" big "BUFFERCOUNT=4" \
	'dd if="$DEV" of="$BAK" bs=1M status=none' "" \
	'dd if="$BAK" of="$DEV" bs=1M status=none'
roundtrip "dd bs=4M iflag=fullblock, st_blksize" big \
	"BLOCKSIZE=65536, BUFFERCOUNT=3, MAXTRANSFERSIZE=4194304" \
	'exec 3<"$DEV"; stat -L -c "%o %s" /proc/self/fd/3 | cut -d" " -f1 > "$T/blk";
	 dd of="$BAK" bs=4M iflag=fullblock status=none <&3' \
	"MAXTRANSFERSIZE=4194304" \
	'dd if="$BAK" of="$DEV" bs=4M iflag=fullblock status=none'
check "st_blksize is MAXTRANSFERSIZE once configured ($(cat "$T/blk" 2>/dev/null))" \
	test "$(cat "$T/blk" 2>/dev/null)" = 4194304
roundtrip "dd bs=4M without fullblock" big \
	"BLOCKSIZE=4096, MAXTRANSFERSIZE=2097152" \
	'dd if="$DEV" of="$BAK" bs=4M status=none' "" \
	'dd if="$BAK" of="$DEV" bs=4M status=none'
roundtrip "dd bs=10240" big "BLOCKSIZE=512, BUFFERCOUNT=2" \
	'dd if="$DEV" of="$BAK" bs=10240 status=none' "" \
	'dd if="$BAK" of="$DEV" bs=10240 status=none'
roundtrip "dd bs=4096 iflag=fullblock" big "BLOCKSIZE=1024" \
	'dd if="$DEV" of="$BAK" bs=4096 iflag=fullblock status=none' "" \
	'dd if="$BAK" of="$DEV" bs=4096 status=none'
roundtrip "dd bs=1000" big "MAXTRANSFERSIZE=196608" \
	'dd if="$DEV" of="$BAK" bs=1000 status=none' "" \
	'dd if="$BAK" of="$DEV" bs=1000 status=none'
roundtrip "dd bs=1" small "BLOCKSIZE=512" \
	'dd if="$DEV" of="$BAK" bs=1 status=none' "" \
	'dd if="$BAK" of="$DEV" bs=1 status=none'
roundtrip "cat | gzip, gzip -dc > device" big "$W1M" \
	'cat "$DEV" | gzip -1 > "$BAK.gz" && gzip -dc "$BAK.gz" > "$BAK"' "" \
	'gzip -dc "$BAK.gz" > "$DEV"'
if command -v zstd >/dev/null; then
	roundtrip "cat | zstd, zstd -dc > device" big "$W1M" \
		'cat "$DEV" | zstd -q -1 > "$BAK.zst" && zstd -q -dc "$BAK.zst" > "$BAK"' "" \
		'zstd -q -dc "$BAK.zst" > "$DEV"'
else
	say "zstd not installed: its round trip is skipped (gzip covers pipelines)"
fi
roundtrip "tar -xf archive -C set directory" big "$W1M" \
	'cp "$DEV" "$BAK"' "" \
	'mkdir -p "$T/tar.$SETNAME" && cp "$BAK" "$T/tar.$SETNAME/$SETNAME" &&
	 tar -cf "$T/a.tar" -C "$T/tar.$SETNAME" "$SETNAME" &&
	 tar -xf "$T/a.tar" -C "$(dirname "$DEV")"'
roundtrip "tar -xOf archive member > device" big "$W1M" \
	'cp "$DEV" "$BAK"' "" \
	'tar -cf "$T/b.tar" -C "$T" "$(basename "$BAK")" &&
	 tar -xOf "$T/b.tar" "$(basename "$BAK")" > "$DEV"'
roundtrip "backup with MAXTRANSFERSIZE 4M, restore with 64K" big \
	"BLOCKSIZE=4096, MAXTRANSFERSIZE=4194304" 'cat "$DEV" > "$BAK"' \
	"BLOCKSIZE=4096, MAXTRANSFERSIZE=65536" 'cp "$BAK" "$DEV"'

# The server's extra VDC_Flush commands and a late VDC_Complete, and a
# set that does not ask for VDC_Complete (end of stream at CloseDevice).
roundtrip "server sends extra VDC_Flush, completes late" big \
	"MAXTRANSFERSIZE=65536, FAULT_EXTRA_FLUSHES=7, FAULT_LATE_COMPLETE=300" \
	'cat "$DEV" > "$BAK"' "" 'cat "$BAK" > "$DEV"'
CFG="features=pipe+nocomplete" roundtrip "features=nocomplete (per-set .config)" big \
	"$W1M" 'cp "$DEV" "$BAK"' "" 'cp "$BAK" "$DEV"'
rm -f "$MNT"/.config/*

# Tools that trust st_size (0 on a device file) copy nothing or stop
# early: each exits 0 or not, but the server must fail loudly, the set
# must say why, and no backup may look complete (README, vdifs(1)).
trusts_size() { # "label" 'command using $DEV, $BAK'
	local st
	new_set
	mkdir "$MNT/$SET"
	export DEV=$MNT/$SET/$SET BAK=$T/size.bak
	server_start "BACKUP DATABASE big TO VIRTUAL_DEVICE='$SET' WITH $W1M"
	timeout -k 5 30 bash -c "$2" >/dev/null 2>&1
	check "$1: the server fails loudly" eval '! server_wait'
	st=$(status_field "$MNT/$SET" state)
	check "$1: the set failed and says why: $(status_field "$MNT/$SET" last-error)" \
		eval 'test "$st" = failed && status_field "$MNT/$SET" last-error | grep -q "before end of stream"'
	rmdir "$MNT/$SET"
	rm -f "$BAK" "$BAK.zst"
}
trusts_size "tar -c of a device file" 'tar -cf "$BAK" -C "$(dirname "$DEV")" "$(basename "$DEV")"'
if command -v rsync >/dev/null; then
	trusts_size "rsync of a device file" 'rsync "$DEV" "$BAK"'
else
	say "rsync not installed: its case is skipped"
fi
if command -v zstd >/dev/null; then
	trusts_size "zstd FILE (not stdin)" 'zstd -q -f "$DEV" -o "$BAK.zst"'
fi

# Snapshot backups through the mount (issue 13): the set's snapshot tool
# copies the frozen database aside and back; the device file carries the
# metadata.  Then the shell-native form: snapshot=manual and .control.
make_db snap 2500000
cp "$DATA/snap.mdf" "$T/snap.orig"
mkdir -p "$T/snapdir"
cat >"$T/snaptool" <<SNAPTOOL
#!/bin/bash
case \$VDI_PHASE in
snapshot) flock -n "$DATA/snap.mdf" true || cp "$DATA/snap.mdf" "$T/snapdir/snap.mdf" ;;
mount) cp "$T/snapdir/snap.mdf" "$DATA/snap.mdf" ;;
esac
SNAPTOOL
chmod +x "$T/snaptool"
snap_backup() {
	new_set
	printf 'snapshot_cmd=%s\n' "$T/snaptool" >"$MNT/.config/$SET"
	mkdir "$MNT/$SET"
	server_start "BACKUP DATABASE snap TO VIRTUAL_DEVICE='$SET' WITH SNAPSHOT"
	cat "$MNT/$SET/$SET" >"$T/snap.meta" && server_wait && [ -s "$T/snapdir/snap.mdf" ]
	local rc=$?
	rmdir "$MNT/$SET"
	rm -f "$MNT/.config/$SET"
	return $rc
}
snap_restore() {
	new_set
	printf 'snapshot_cmd=%s\n' "$T/snaptool" >"$MNT/.config/$SET"
	mkdir "$MNT/$SET"
	server_start "RESTORE DATABASE snap FROM VIRTUAL_DEVICE='$SET' WITH SNAPSHOT, REPLACE"
	cp "$T/snap.meta" "$MNT/$SET/$SET" && server_wait && same "$DATA/snap.mdf" "$T/snap.orig"
	local rc=$?
	rmdir "$MNT/$SET"
	rm -f "$MNT/.config/$SET"
	return $rc
}
check "snapshot backup through the mount: the tool copied the frozen database" snap_backup
echo garbage >"$DATA/snap.mdf"
check "snapshot restore through the mount: the tool mounted it back, byte-identical" snap_restore
snap_manual() {
	new_set
	printf 'snapshot=manual\n' >"$MNT/.config/$SET"
	mkdir "$MNT/$SET"
	server_start "BACKUP DATABASE snap TO VIRTUAL_DEVICE='$SET' WITH SNAPSHOT"
	cat "$MNT/$SET/$SET" >"$T/snap2.meta" &
	local c=$! i st= phase= frozen=
	for i in $(seq 200); do
		st=$(status_field "$MNT/$SET" snapshot)
		case $st in
		*"waiting for snapshot-done (phase prepare"*) echo snapshot-done >"$MNT/$SET/.control" ;;
		*"waiting for snapshot-done (phase snapshot"*)
			flock -n "$DATA/snap.mdf" true || frozen=yes
			phase=snapshot
			echo snapshot-done >"$MNT/$SET/.control"
			break ;;
		esac
		sleep 0.05
	done
	wait $c && server_wait
	local rc=$?
	rmdir "$MNT/$SET"
	rm -f "$MNT/.config/$SET"
	[ "$phase" = snapshot ] && [ "$frozen" = yes ] || { say "  phase '$phase', frozen '$frozen', last status '$st'"; return 1; }
	return $rc
}
check "snapshot=manual: .status waits, the database is frozen, snapshot-done ends it" snap_manual

check_nothing_left
