#!/usr/bin/env bash
# cli_media.sh - `vdi pipe` on tape, disk and removable media (issue 12,
# D50, F34) against `vdi exec`: refused combinations of --features and
# --volume-size; backup and restore byte-identical on 1 and 4 devices for
# tape, disk, pipe+removable and tape+removable, with media small enough
# that each device spans several (FILE, FILE.1, ...) and enough buffers
# that several Writes are in flight when a medium ends; the tape images
# are AWS images with filemarks; a restore from media in the wrong order
# or with one missing fails and leaves the database as it was; and a
# full + differential + log chain on tape.
. "$(dirname "$0")/cli_lib.bash" md

# media FILE -> "FILE FILE.1 FILE.2 ..." (the media files that exist)
media() {
	local i=1 s=$1
	while [ -e "$1.$i" ]; do s="$s $1.$i"; i=$((i + 1)); done
	echo "$s"
}

# aws FILE... : checks that each file is an AWS tape image on its own (a
# medium: the chain of previous lengths starts at 0) and prints
# "FILEMARKS RECORDS" of them all.
aws() {
	python3 - "$@" <<'PY'
import sys
marks = recs = 0
for path in sys.argv[1:]:
    b = open(path, 'rb').read()
    off = prev = 0
    inrec = False
    while off < len(b):
        if off + 6 > len(b):
            sys.exit(f"{path}: chunk header cut at byte offset {off}")
        ln, pv, fl = b[off] | b[off + 1] << 8, b[off + 2] | b[off + 3] << 8, b[off + 4]
        if pv != prev or b[off + 5] or fl & ~0xe0:
            sys.exit(f"{path}: bad chunk header at byte offset {off}: {b[off:off + 6].hex()}")
        if fl & 0x40:
            if ln or fl != 0x40 or inrec:
                sys.exit(f"{path}: bad filemark at byte offset {off}")
            marks += 1
        else:
            if not ln or bool(fl & 0x80) == inrec:
                sys.exit(f"{path}: chunk out of its record at byte offset {off}")
            inrec = not fl & 0x20
            recs += bool(fl & 0x20)
        prev = ln
        off += 6 + ln
    if off != len(b) or inrec:
        sys.exit(f"{path}: ends inside a chunk or a record")
print(marks, recs)
PY
}

# refused ARGS... : `vdi pipe ARGS` exits 2 before creating anything and
# says why ($want: a part of the message).
refused() {
	local rc
	timeout -k 5 20 "$VDI" pipe -s "$PFX-no" -t 1 "$@" </dev/null >/dev/null 2>"$TMP/perr"
	rc=$?
	[ "$rc" = 2 ] && grep -qF -- "$want" "$TMP/perr" ||
		die "vdi pipe $*: exit $rc, want 2 and '$want': $(cat "$TMP/perr")"
}

# 1. What --features and --volume-size refuse, with the reason.
want="'tape' and 'disk' are two device types: a set is one of pipe, tape or disk" refused --features tape,disk
want="'pipe' and 'tape' are two device types" refused --features pipe,tape
want="'disk' and 'pipe' are two device types" refused -F disk -F removable,pipe
want="unknown feature 'reverse' (pipe, tape, disk, removable, discard, request-complete)" refused --features tape,reverse
want="invalid --volume-size 65536: only removable media have a size: add --features removable (with pipe or disk) or --features tape" \
	refused --features disk --volume-size 65536 "$TMP/x"
want="invalid --volume-size 65536: device '$PFX-no' is on standard input or output, which holds one medium" \
	refused --features tape --volume-size 65536
want="device '$PFX-no1' is on standard input or output" refused -F removable --volume-size 65536 "$TMP/x" -
want="invalid --volume-size 65536 with --tar: the archive is one medium for the whole set" \
	refused --tar --features removable --volume-size 65536 "$TMP/x"
want="invalid --volume-size '11': must be a decimal number from 12" refused -F removable --volume-size 11 "$TMP/x"
want="invalid --tar with --features tape: a tar member is a chunk of a VDC_Write buffer, which a tape image's block headers are not" \
	refused --tar --features tape "$TMP/x"
want="invalid --tar with --features removable" refused --tar -F disk,removable "$TMP/x"
[ -e "$TMP/x" ] && die "a refused vdi pipe created its file"

# 2. Round trips.  mediatrip NAME NDEV FEATURES VOLUME: back up a database
# of 2.5 MB (plus 0.7 MB a device more: each holds a 1 MiB chunk) through `vdi pipe --features FEATURES [--volume-size VOLUME]`
# with 64 KiB Writes and 4 buffers per device, restore it with other
# buffers, compare.  Leaves the media in $TMP/NAME.k[.m].
mediatrip() {
	local name=$1 nd=$2 feat=$3 vol=$4 s files=() k r
	n=$((n + 1))
	s=$PFX-$n
	head -c $((2500000 + (nd - 1) * 700000 + n)) /dev/urandom >"$DATA/$name.mdf"
	for ((k = 0; k < nd; k++)); do files+=("$TMP/$name.$k"); done
	PIPE_OPTS="--features $feat${vol:+ --volume-size $vol}"
	r=$(pair "$s" "$nd" "BACKUP DATABASE $name TO $(devs "$s" "$nd") WITH BUFFERCOUNT=$((4 * nd)), MAXTRANSFERSIZE=65536" "${files[@]}")
	[ "$r" = "0 0" ] || { die "$name: backup ($feat, $nd devices): exit $r: $(cat "$TMP/err" "$TMP/perr")"; return 1; }
	cp "$DATA/$name.mdf" "$TMP/$name.orig"
	rm -f "$DATA/$name.mdf"
	PIPE_OPTS="--features $feat"
	r=$(pair "$s-r" "$nd" "RESTORE DATABASE $name FROM $(devs "$s-r" "$nd") WITH BUFFERCOUNT=$((3 * nd)), MAXTRANSFERSIZE=131072" "${files[@]}")
	PIPE_OPTS=
	[ "$r" = "0 0" ] || { die "$name: restore ($feat, $nd devices): exit $r: $(cat "$TMP/err" "$TMP/perr")"; return 1; }
	cmp -s "$DATA/$name.mdf" "$TMP/$name.orig" || { die "$name: restore ($feat, $nd devices): database differs"; return 1; }
	return 0
}

# several_media NAME NDEV: every device of NAME spans at least 3 media
several_media() {
	local k
	for ((k = 0; k < $2; k++)); do
		[ -e "$TMP/$1.$k.2" ] || die "$1: device $k holds $(media "$TMP/$1.$k" | wc -w) media, want 3 or more"
	done
}

# tape_images NAME NDEV: the media of every device are AWS images and
# the device's stripe has filemarks
tape_images() {
	local k out
	for ((k = 0; k < $2; k++)); do
		out=$(aws $(media "$TMP/$1.$k")) || { die "$1: device $k: not a tape image: $out"; continue; }
		[ "${out%% *}" -gt 0 ] || die "$1: device $k: the tape image has no filemark ($out: marks, records)"
	done
}

for nd in 1 4; do
	mediatrip tape$nd "$nd" tape "" && tape_images tape$nd "$nd"
	mediatrip disk$nd "$nd" disk "" && [ ! -e "$TMP/disk$nd.0.1" ] || die "disk$nd: a second medium without removable media"
	mediatrip rm$nd "$nd" removable 200000 && several_media rm$nd "$nd"
	mediatrip trm$nd "$nd" tape 200000 && several_media trm$nd "$nd" && tape_images trm$nd "$nd"
done
mediatrip drm1 1 disk,removable,discard 150000 && several_media drm1 1
# a pipe or disk medium holds whole blocks (the server re-issues the rest
# of a cut Write): 200000 bytes are 390 blocks of 512
for f in "$TMP/rm1.0" "$TMP/rm1.0.1"; do
	[ "$(stat -c %s "$f")" = 199680 ] || die "$f: $(stat -c %s "$f") bytes, want 199680 (whole blocks)"
done
echo "round trips: done ($n)"

# 3. One line per medium on stderr (without -q), the bytes of its file.
head -c 700000 /dev/urandom >"$DATA/ln.mdf"
timeout -k 5 60 "$VDI" pipe -s "$PFX-ln" -t 20000 --features tape --volume-size 150000 "$TMP/ln" 2>"$TMP/perr" &
p=$!
timeout -k 5 60 "$VDI" exec -q -D "$DATA" -t 20000 \
	"BACKUP DATABASE ln TO VIRTUAL_DEVICE='$PFX-ln' WITH BUFFERCOUNT=6, MAXTRANSFERSIZE=65536" 2>"$TMP/err" ||
	die "medium lines: backup failed: $(cat "$TMP/err")"
wait $p || die "medium lines: pipe failed: $(cat "$TMP/perr")"
m=0
for f in $(media "$TMP/ln"); do
	grep -qxF "vdi: device '$PFX-ln': medium $m: $(stat -c %s "$f") bytes on '$f'" "$TMP/perr" ||
		die "medium lines: none for medium $m ($f): $(cat "$TMP/perr")"
	m=$((m + 1))
done
[ "$(wc -l <"$TMP/perr")" = "$m" ] && [ "$m" -ge 3 ] || die "medium lines: $m media, stderr: $(cat "$TMP/perr")"

# 4. Media in the wrong order, or one missing: the restore fails, names
# the missing file, and the database stays as it was.
badrestore() { # badrestore NAME FEATURES WHAT: restore NAME.0 media as they are now
	local r
	head -c 1000 /dev/urandom >"$DATA/$1.mdf"
	cp "$DATA/$1.mdf" "$TMP/$1.before"
	PIPE_OPTS="--features $2"
	r=$(pair "$PFX-bad" 1 "RESTORE DATABASE $1 FROM VIRTUAL_DEVICE='$PFX-bad' WITH REPLACE" "$TMP/$1.0")
	PIPE_OPTS=
	[ "${r%% *}" = 1 ] && [ "${r##* }" != 0 ] || die "$1: restore with media $3: exit $r, want a failure of both"
	cmp -s "$DATA/$1.mdf" "$TMP/$1.before" || die "$1: restore with media $3 changed the database"
	ls -a "$DATA" | grep -qE "^\.$1.*\.vdi-" && die "$1: restore with media $3 left temporary files"
}
for c in "rm1|removable" "trm1|tape"; do
	name=${c%%|*} feat=${c#*|}
	mv "$TMP/$name.0.1" "$TMP/$name.0.x"
	mv "$TMP/$name.0.2" "$TMP/$name.0.1"
	mv "$TMP/$name.0.x" "$TMP/$name.0.2"
	badrestore "$name" "$feat" "1 and 2 swapped"
	mv "$TMP/$name.0.1" "$TMP/$name.0.x"
	badrestore "$name" "$feat" "1 missing"
	grep -qF "device '$PFX-bad': cannot open '$TMP/$name.0.1' for medium 1 of the restore: No such file or directory" "$TMP/perr" ||
		die "$name: missing medium 1: $(cat "$TMP/perr")"
done

# 5. A full, differential and log chain on tape, several media each.
head -c $((3 * 1048576 + 17)) /dev/urandom >"$DATA/tch.mdf"
chainstep() { # chainstep NAME STATEMENT: through vdi pipe on a tape, media $TMP/tch-NAME*
	PIPE_OPTS="--features tape --volume-size 400000" pair "$PFX-tch" 1 "$2" "$TMP/tch-$1"
}
r=$(chainstep full "BACKUP DATABASE tch TO VIRTUAL_DEVICE='$PFX-tch' WITH FORMAT, INIT, CHECKSUM, BUFFERCOUNT=6")
[ "$r" = "0 0" ] || die "tape chain: full: exit $r: $(cat "$TMP/err" "$TMP/perr")"
dd if=/dev/urandom of="$DATA/tch.mdf" bs=1 count=100 seek=1000000 conv=notrunc status=none
r=$(chainstep diff "BACKUP DATABASE tch TO VIRTUAL_DEVICE='$PFX-tch' WITH DIFFERENTIAL")
[ "$r" = "0 0" ] || die "tape chain: differential: exit $r: $(cat "$TMP/err" "$TMP/perr")"
dd if=/dev/urandom of="$DATA/tch.mdf" bs=1 count=100 seek=2500000 conv=notrunc status=none
head -c 1500000 /dev/urandom >>"$DATA/tch.mdf"
r=$(chainstep log "BACKUP LOG tch TO VIRTUAL_DEVICE='$PFX-tch'")
[ "$r" = "0 0" ] || die "tape chain: log: exit $r: $(cat "$TMP/err" "$TMP/perr")"
cp "$DATA/tch.mdf" "$TMP/tch.at-log"
[ -e "$TMP/tch-full.2" ] || die "tape chain: the full backup holds $(media "$TMP/tch-full" | wc -w) media, want 3 or more"
r=$(chainstep full "RESTORE DATABASE tch FROM VIRTUAL_DEVICE='$PFX-tch' WITH REPLACE, NORECOVERY")
[ "$r" = "0 0" ] || die "tape chain: restore full: exit $r: $(cat "$TMP/err" "$TMP/perr")"
r=$(chainstep diff "RESTORE DATABASE tch FROM VIRTUAL_DEVICE='$PFX-tch' WITH NORECOVERY")
[ "$r" = "0 0" ] || die "tape chain: restore differential: exit $r: $(cat "$TMP/err" "$TMP/perr")"
r=$(chainstep log "RESTORE LOG tch FROM VIRTUAL_DEVICE='$PFX-tch' WITH RECOVERY")
[ "$r" = "0 0" ] && cmp -s "$DATA/tch.mdf" "$TMP/tch.at-log" && [ ! -e "$DATA/tch.mdf.vdi-restoring" ] ||
	die "tape chain: restore log: exit $r: $(cat "$TMP/err" "$TMP/perr")"
n=$((n + 6))

# 5b. The stand-in names each medium it loads as the clients number their
#     files: medium 1 is FILE.1.
timeout -k 5 60 "$VDI" pipe -q -s "$PFX-vl" --features tape --volume-size 400000 -t 20000 \
	"$TMP/tch-full" 2>"$TMP/perr" &
p=$!
timeout -k 5 60 "$VDI" exec -D "$DATA" -t 20000 \
	"RESTORE VERIFYONLY FROM VIRTUAL_DEVICE='$PFX-vl'" >"$TMP/out" 2>"$TMP/err"
e=$?
wait $p
c=$?
[ "$e $c" = "0 0" ] && grep -q "device '$PFX-vl': medium 1 loaded" "$TMP/err" &&
	grep -q "device '$PFX-vl': medium 2 loaded" "$TMP/err" &&
	! grep -q "medium 0 loaded" "$TMP/err" ||
	die "medium numbers: exit $e $c: $(cat "$TMP/err" "$TMP/perr")"
n=$((n + 1))

# 6. Both media directions configured (D18, spec 4 "and/or"): each device's
#    first data command tells the client which way it goes; 1 and 4 devices.
for nd in 1 4; do
	head -c $((2 * 1048576 + 99)) /dev/urandom >"$DATA/both$nd.mdf"
	files=$(for k in $(seq 0 $((nd - 1))); do printf '%s ' "$TMP/both$nd.$k"; done)
	# shellcheck disable=SC2086
	r=$(EXEC_OPTS=--both-media pair "$PFX-b$nd" $nd "BACKUP DATABASE both$nd TO $(devs "$PFX-b$nd" $nd)" $files)
	[ "$r" = "0 0" ] || die "both media, $nd devices: backup: exit $r: $(cat "$TMP/err" "$TMP/perr")"
	cp "$DATA/both$nd.mdf" "$TMP/both$nd.ref"
	echo changed >"$DATA/both$nd.mdf"
	# shellcheck disable=SC2086
	r=$(EXEC_OPTS=--both-media pair "$PFX-b$nd" $nd "RESTORE DATABASE both$nd FROM $(devs "$PFX-b$nd" $nd) WITH REPLACE" $files)
	[ "$r" = "0 0" ] && cmp -s "$DATA/both$nd.mdf" "$TMP/both$nd.ref" ||
		die "both media, $nd devices: restore: exit $r: $(cat "$TMP/err" "$TMP/perr")"
	n=$((n + 2))
done

left=$(ls /dev/shm | grep -F "$PFX" || true)
[ -z "$left" ] || die "shared memory left: $left"
[ $fail = 0 ] && echo "cli_media: all passed ($n round trips)"
exit $fail
