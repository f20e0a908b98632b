#!/usr/bin/env bash
# The main job, end to end, on a fresh machine: install what is missing,
# build, mount vdifs in a private directory, take a real backup of a
# database through the mount with `cp`, restore it into a new database
# with `cp`, and show that the restored database is identical.
#
#   scripts/demo.sh [SIZE]      SIZE of the demo database (default 256M)
#
# Everything it starts is stopped and unmounted on exit, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-256M}

bash scripts/setup.sh
make -j"$(nproc)" >/dev/null
BIN=$PWD/build
work=$(mktemp -d /tmp/vdifs-demo.XXXXXX)
mnt=$work/mnt
export VDI_DATA_DIR=$work/data
mkdir -p "$mnt" "$VDI_DATA_DIR"

cleanup() {
	set +e
	jobs -p | xargs -r kill 2>/dev/null
	mountpoint -q "$mnt" && { fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt"; }
	wait 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "a database: $size of random data in $VDI_DATA_DIR/demo.mdf"
head -c "$size" /dev/urandom >"$VDI_DATA_DIR/demo.mdf"

step "mount vdifs at $mnt"
"$BIN/vdifs" "$mnt"

step "BACKUP DATABASE demo through the mount: cp is the backup software"
mkdir "$mnt/backup1"
"$BIN/vdi" exec "BACKUP DATABASE demo TO VIRTUAL_DEVICE='backup1' WITH BLOCKSIZE=4096, BUFFERCOUNT=8, MAXTRANSFERSIZE=1048576" &
server=$!
cp "$mnt/backup1/backup1" "$work/demo.bak"
wait $server
ls -l "$work/demo.bak"
cat "$mnt/backup1/.status"

step "RESTORE DATABASE demo_copy through the mount: cp feeds it"
mkdir "$mnt/restore1"
"$BIN/vdi" exec "RESTORE DATABASE demo_copy FROM VIRTUAL_DEVICE='restore1' WITH MAXTRANSFERSIZE=1048576" &
server=$!
cp "$work/demo.bak" "$mnt/restore1/restore1"
wait $server

step "compare"
cmp "$VDI_DATA_DIR/demo.mdf" "$VDI_DATA_DIR/demo_copy.mdf"
sha256sum "$VDI_DATA_DIR/demo.mdf" "$VDI_DATA_DIR/demo_copy.mdf"
echo "identical: the restored database matches the original byte for byte"
