#!/usr/bin/env bash
# cli_doctor.sh - `vdi doctor` (D32) with real processes, in an instance
# of its own so that nobody else's sets are looked at:
#  - a set whose client (vdi pipe) was killed with SIGKILL is reported as
#    a leftover to fix, exit status 1; a set whose client waits is not;
#  - --fix removes the dead one and keeps the live one (object and
#    process); its exit status is 0 exactly when no FIX line remains;
#  - a third run finds nothing left; every line carries one of the four
#    tags; bad arguments are usage errors (2).
. "$(dirname "$0")/cli_lib.bash" doctor

INST=D$$
STALE=$PFX-stale
LIVE=$PFX-live
EXTRA_SETS=

# wait_obj NAME: until /dev/shm/NAME exists (10 s at most)
wait_obj() {
	local i
	for ((i = 0; i < 500; i++)); do
		[ -e "/dev/shm/$1" ] && return 0
		sleep 0.02
	done
	return 1
}

doctor() { timeout -k 5 60 "$VDI" doctor -I "$INST" "$@"; }

# tags FILE: every line is "ok", "FIX", "fixed" or "skip" and a message
tags() { ! grep -vE '^(ok|FIX|fixed|skip) +[^ ]' "$1"; }

# No timeout wrapper: $! must be vdi itself, the process to kill (the
# cleanup kills what is left; -t bounds the live one's wait anyway).
"$VDI" pipe -q -I "$INST" -s "$STALE" -t 60000 >/dev/null 2>"$TMP/stale.err" &
dead=$!
wait_obj "vdi.$INST.$STALE" || die "the set to kill never appeared"
kill -9 "$dead"
wait "$dead" 2>/dev/null
"$VDI" pipe -q -I "$INST" -s "$LIVE" -t 60000 >/dev/null 2>"$TMP/live.err" &
live=$!
wait_obj "vdi.$INST.$LIVE" || die "the live set never appeared"

doctor >"$TMP/d1" 2>&1
rc=$?
cat "$TMP/d1"
grep -q "^FIX .*leftover set '$STALE' (instance $INST, .*) of dead client pid .*: remove it with vdi doctor --fix" "$TMP/d1" ||
	die "the dead client's set is not reported"
grep -q "$LIVE" "$TMP/d1" && die "the live set is reported"
[ $rc = 1 ] || die "exit status $rc with a leftover, want 1"
tags "$TMP/d1" || die "a line without a tag"
[ -e "/dev/shm/vdi.$INST.$STALE" ] || die "without --fix the leftover was removed"

doctor --fix >"$TMP/d2" 2>&1
rc=$?
cat "$TMP/d2"
grep -q "^fixed .*leftover set '$STALE'.*: removed" "$TMP/d2" || die "--fix did not say it removed the set"
[ -e "/dev/shm/vdi.$INST.$STALE" ] && die "--fix left the dead set"
[ -e "/dev/shm/vdi.$INST.$LIVE" ] || die "--fix removed the live set"
kill -0 "$live" 2>/dev/null || die "the live client died"
grep -q "$LIVE" "$TMP/d2" && die "--fix mentions the live set"
if grep -q '^FIX' "$TMP/d2"; then want=1; else want=0; fi
[ $rc = $want ] || die "--fix exit status $rc, want $want (FIX lines: $want)"
tags "$TMP/d2" || die "a line without a tag after --fix"

doctor >"$TMP/d3" 2>&1
grep -q "^ok .*no leftovers of dead processes in /dev/shm for instance $INST" "$TMP/d3" ||
	die "a third run does not find the instance clean: $(grep -i leftover "$TMP/d3")"

"$VDI" doctor extra >/dev/null 2>&1
[ $? = 2 ] || die "vdi doctor extra: not a usage error"
"$VDI" doctor -I 'bad.name' >/dev/null 2>"$TMP/err"
[ $? = 2 ] && grep -q "invalid instance name 'bad.name'" "$TMP/err" || die "a bad instance name is not refused"

kill "$live" 2>/dev/null
wait "$live" 2>/dev/null
rm -f /dev/shm/vdi.$INST.* /dev/shm/vdi-*.$INST.*
[ $fail = 0 ] && echo "cli_doctor: all passed"
exit $fail
