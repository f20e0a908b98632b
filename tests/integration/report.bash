# SPDX-License-Identifier: MIT
# report.bash - how the fs and system scripts (fs_lib.bash, security.sh,
# load.sh) report, sourced after they set NAME (the prefix of every
# line), FAILED=0 and T (their temporary directory, with vdifs.log).

say() { printf '%s: %s\n' "$NAME" "$*"; }
pass() { say "ok: $*"; }
fail() { say "FAIL: $*"; FAILED=$((FAILED + 1)); }
# check "what" command...: passes when the command succeeds
check() {
	local what=$1
	shift
	if "$@"; then pass "$what"; else fail "$what"; fi
}

# kill_tree PID: the process and every descendant (`timeout` puts its
# command in a process group of its own, so groups are not enough)
kill_tree() {
	local c
	kill -STOP "$1" 2>/dev/null
	for c in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$c"; done
	kill -9 "$1" 2>/dev/null
}

# report_end "OBJECTS": the last step of a cleanup, once everything was
# stopped and unmounted.  OBJECTS are /dev/shm names of this run still
# there: each is a failure, and is removed.  On failure the tail of the
# daemon's log follows.  Removes T, prints the count and exits 1 if
# anything failed.
report_end() {
	if [ -n "$1" ]; then
		fail "shared memory left behind: $(echo $1)"
		(cd /dev/shm && rm -f $1)
	fi
	if [ "$FAILED" -gt 0 ] && [ -s "$T/vdifs.log" ]; then
		say "vdifs log (last lines):"
		tail -n 40 "$T/vdifs.log" >&2
	fi
	rm -rf "$T"
	say "$FAILED failure(s)"
	exit $((FAILED > 0 ? 1 : 0))
}
