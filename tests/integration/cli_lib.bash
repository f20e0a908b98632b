# SPDX-License-Identifier: MIT
# cli_lib.bash - what the `vdi` integration scripts (cli_*.sh) share.
# Source it with a tag: `. "$(dirname "$0")/cli_lib.bash" rt`.  It sets
#   ROOT VDI     the tree and its vdi binary ($BUILD, default build)
#   TMP DATA     a private temporary directory and its data directory
#   PFX          set-name prefix of this run (cli<tag>-<pid>)
#   fail n       0: failure flag and round counter
# and on exit kills the script's background jobs and removes TMP and
# every shared-memory object of this run, plus those of the sets named in
# EXTRA_SETS (names outside PFX, e.g. a GUID).
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VDI=$ROOT/${BUILD:-build}/vdi
TMP=$(mktemp -d "/tmp/vdi-cli-$1.XXXXXX")
PFX=cli$1-$$
DATA=$TMP/data
mkdir -p "$DATA"
fail=0
n=0
EXTRA_SETS=

cli_cleanup() {
	local s
	jobs -p | xargs -r kill -9 2>/dev/null
	wait 2>/dev/null
	rm -f /dev/shm/vdi.*."$PFX"-* /dev/shm/vdi-*."$PFX"-*
	for s in $EXTRA_SETS; do rm -f /dev/shm/vdi.*."$s" /dev/shm/vdi-*."$s"; done
	rm -rf "$TMP"
}
trap cli_cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "FAIL: $*"; fail=1; }

# devs SET N -> "VIRTUAL_DEVICE='SET', VIRTUAL_DEVICE='SET1', ..."
devs() {
	local s="VIRTUAL_DEVICE='$1'" i
	for ((i = 1; i < $2; i++)); do s="$s, VIRTUAL_DEVICE='$1$i'"; done
	echo "$s"
}

# pair SET NDEV STATEMENT FILE... : `vdi pipe` (the client, on FILEs;
# PIPE_OPTS adds options, its stderr goes to $TMP/perr) against `vdi
# exec EXEC_OPTS
# exec STATEMENT` (stdout $TMP/out, stderr $TMP/err); echoes the two exit
# codes, "exec pipe".
pair() {
	local set=$1 nd=$2 stmt=$3 p e c
	shift 3
	timeout -k 5 120 "$VDI" pipe -q -s "$set" -n "$nd" -t 20000 ${PIPE_OPTS:-} "$@" 2>"$TMP/perr" &
	p=$!
	timeout -k 5 120 "$VDI" exec -q -D "$DATA" -t 20000 ${EXEC_OPTS:-} "$stmt" >"$TMP/out" 2>"$TMP/err"
	e=$?
	wait $p
	c=$?
	echo "$e $c"
}
