#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# fs_stripes.sh - issue 4: several devices of one set streaming in
# parallel through a vdifs mount (4-device stripes from the mount option
# devices=4, a 2-device set from a per-set .config file), backup and
# restore with `vdi exec`, restored database byte-identical.
. "$(dirname "$0")/fs_lib.bash"

fs_mount -o devices=4 || exit 1
make_db db $((24 * 1024 * 1024 + 4321))

# stripe N WITH: backup of db over N devices read by N parallel readers,
# then restore by N parallel writers (alternating tools)
stripe() {
	local ndev=$1 with=$2 k s r dev pids rcs vds
	new_set
	s=$SET
	[ "$ndev" -ne 4 ] && printf 'devices=%s\n' "$ndev" >"$MNT/.config/$s"
	mkdir "$MNT/$s" || { fail "mkdir $s"; return 1; }
	devs=("$s")
	for k in $(seq 1 $((ndev - 1))); do devs+=("$s$k"); done
	ls -A "$MNT/$s" >"$T/ls"
	check "$ndev devices listed as $s, ${s}1.., and $s.tar" \
		test "$(sort "$T/ls" | tr '\n' ' ')" = "$(printf '%s\n' .control .status "${devs[@]}" "$s.tar" | sort | tr '\n' ' ')"
	vds=$(printf "VIRTUAL_DEVICE='%s', " "${devs[@]}")
	server_start "BACKUP DATABASE db TO ${vds%, } WITH $with"
	pids=()
	for k in "${!devs[@]}"; do
		dev=$MNT/$s/${devs[$k]}
		if [ $((k % 2)) -eq 0 ]; then
			timeout -k 5 60 cp "$dev" "$T/stripe.$k" &
		else
			timeout -k 5 60 dd if="$dev" of="$T/stripe.$k" bs=1M status=none &
		fi
		pids+=($!)
	done
	rcs=0
	for k in "${pids[@]}"; do wait "$k" || rcs=$((rcs + 1)); done
	check "$ndev-device backup: every reader succeeded" test "$rcs" -eq 0
	check "$ndev-device backup: server succeeded" server_wait
	check "$ndev-device backup: set done" test "$(status_field "$MNT/$s" state)" = done
	check "$ndev-device backup: every device got data" \
		test "$(grep -c '^device: .* done [1-9]' "$MNT/$s/.status")" -eq "$ndev"
	# each device: its bytes (the size of its stripe), rate and elapsed
	local bad=0 sum=0 n rate secs
	for k in "${!devs[@]}"; do
		read -r n rate secs < <(sed -nE "s/^device: ${devs[$k]} done ([0-9]+) bytes, ([0-9.]+) MB\/s, ([0-9.]+) s$/\1 \2 \3/p" "$MNT/$s/.status")
		[ "${n:-x}" = "$(stat -c %s "$T/stripe.$k")" ] && [ "${rate%.*}" -ge 0 ] && [ -n "$secs" ] || bad=$((bad + 1))
		sum=$((sum + ${n:-0}))
	done
	check "$ndev-device backup: .status gives every device its bytes, rate and elapsed" test "$bad" -eq 0
	check "$ndev-device backup: the devices' bytes add up to the set's ($sum)" \
		test "$(status_field "$MNT/$s" bytes)" = "$sum"
	rmdir "$MNT/$s" || fail "rmdir $s"

	new_set
	r=$SET
	[ "$ndev" -ne 4 ] && printf 'devices=%s\n' "$ndev" >"$MNT/.config/$r"
	mkdir "$MNT/$r" || { fail "mkdir $r"; return 1; }
	rdevs=("$r")
	for k in $(seq 1 $((ndev - 1))); do rdevs+=("$r$k"); done
	vds=$(printf "VIRTUAL_DEVICE='%s', " "${rdevs[@]}")
	rm -f "$DATA/restored.mdf"
	server_start "RESTORE DATABASE restored FROM ${vds%, }"
	pids=()
	for k in "${!rdevs[@]}"; do
		dev=$MNT/$r/${rdevs[$k]}
		if [ $((k % 2)) -eq 0 ]; then
			timeout -k 5 60 dd if="$T/stripe.$k" of="$dev" bs=256k status=none &
		else
			timeout -k 5 60 bash -c 'cat "$1" > "$2"' _ "$T/stripe.$k" "$dev" &
		fi
		pids+=($!)
	done
	rcs=0
	for k in "${pids[@]}"; do wait "$k" || rcs=$((rcs + 1)); done
	check "$ndev-device restore: every writer succeeded" test "$rcs" -eq 0
	check "$ndev-device restore: server succeeded" server_wait
	check "$ndev-device restore: database identical" same "$DATA/restored.mdf" "$DATA/db.mdf"
	check "$ndev-device restore: set done" test "$(status_field "$MNT/$r" state)" = done
	rmdir "$MNT/$r" || fail "rmdir $r"
	rm -f "$MNT/.config/$s" "$MNT/.config/$r" "$T"/stripe.*
}

stripe 4 "BLOCKSIZE=4096, BUFFERCOUNT=8, MAXTRANSFERSIZE=1048576"
stripe 2 "BLOCKSIZE=512, BUFFERCOUNT=3, MAXTRANSFERSIZE=65536"
stripe 4 "BLOCKSIZE=65536, BUFFERCOUNT=16, MAXTRANSFERSIZE=4194304"

check_nothing_left
