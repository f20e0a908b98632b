#!/usr/bin/env bash
# Runs test programs one by one, each under a hard time limit, and prints
# one closing line "N passed, N failed".  A check suite counts as one
# test per checked case (its own summary line is parsed); a script counts
# as one test.  Usage: run-tests.sh <label> <program>...
set -u
label=$1; shift
limit_unit=${TEST_TIMEOUT_UNIT:-300}
limit_script=${TEST_TIMEOUT_SCRIPT:-600}
passed=0 failed=0
# Objects that exist before the run belong to someone else.
before=$(ls /dev/shm 2>/dev/null | grep -E '^vdi[.-]' | sort || true)
failed_names=()
for t in "$@"; do
	case "$t" in
	*.sh)
		printf '=== %s\n' "$t"
		if timeout -k 10 "$limit_script" bash "$t"; then
			passed=$((passed + 1))
		else
			rc=$?
			failed=$((failed + 1)); failed_names+=("$t (exit $rc)")
		fi
		;;
	*)
		printf '=== %s\n' "$t"
		out=$(mktemp)
		timeout -k 10 "$limit_unit" "$t" 2>&1 | tee "$out"
		rc=${PIPESTATUS[0]}
		# Check prints "NN%: Checks: C, Failures: F, Errors: E".
		line=$(grep -E '^[0-9]+%: Checks: ' "$out" | tail -n 1)
		rm -f "$out"
		if [ -n "$line" ]; then
			c=$(sed -E 's/.*Checks: ([0-9]+).*/\1/' <<<"$line")
			f=$(sed -E 's/.*Failures: ([0-9]+).*/\1/' <<<"$line")
			e=$(sed -E 's/.*Errors: ([0-9]+).*/\1/' <<<"$line")
			passed=$((passed + c - f - e)); failed=$((failed + f + e))
			[ $((f + e)) -gt 0 ] && failed_names+=("$t")
			if [ "$rc" -ne 0 ] && [ $((f + e)) -eq 0 ]; then
				failed=$((failed + 1)); failed_names+=("$t (exit $rc)")
			fi
		elif [ "$rc" -eq 0 ]; then
			passed=$((passed + 1))
		else
			failed=$((failed + 1)); failed_names+=("$t (exit $rc)")
		fi
		;;
	esac
done
# Nothing of ours may outlive the suite.
left=$(comm -13 <(printf '%s\n' "$before") <(ls /dev/shm 2>/dev/null | grep -E '^vdi[.-]' | sort) | grep . || true)
if [ -n "$left" ]; then
	echo "leftover shared memory: $left"
	failed=$((failed + 1)); failed_names+=("leftover /dev/shm objects")
fi
for n in "${failed_names[@]+"${failed_names[@]}"}"; do echo "FAILED: $n"; done
echo "$label: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
