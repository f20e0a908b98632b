#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# sqlvdi.sh - issue 9: libvdi speaks Microsoft's Linux VDI API.
#   1. `make install` puts libsqlvdi.so/.a, include/sqlvdi/{vdi.h,vdierror.h}
#      and sqlvdi.pc where pkg-config finds them, and never shadows
#      libvdi's own include/vdi.h;
#   2. libsqlvdi.so exports exactly the members of Microsoft's two classes
#      under their mangled names (what a binary built against Microsoft's
#      headers calls), and nothing of the libvdi inside it;
#   3. a program compiled only against the installed headers and
#      `pkg-config --cflags --libs sqlvdi` (tests/sqlvdi/abi.cpp) gets the
#      spec's codes for every member, wrong states included, with the
#      timeouts, names, modes and object ownership of decisions D40-D46;
#   4. a library without the symbols, or none at all, is refused by the
#      client backend (vdifs mount, vdi pipe) with the path and the member.
# Skipped, with a message, when there is no C++ compiler.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) BDIR=$BUILD ;; *) BDIR=$ROOT/$BUILD ;; esac
NAME=sqlvdi.sh
CXX=${CXX:-c++}
T=$(mktemp -d "${TMPDIR:-/tmp}/sqlvdi-test.XXXXXX")
FAILED=0
. "$(dirname "$0")/report.bash"
cleanup() { report_end "$(ls /dev/shm 2>/dev/null | grep -E "^vdi.*sqlvdi-abi-" || true)"; }
trap cleanup EXIT

if ! command -v "$CXX" >/dev/null 2>&1 || [ ! -e "$BDIR/libsqlvdi.so" ]; then
	say "skipped: no C++ compiler ($CXX), so libsqlvdi was not built"
	trap - EXIT
	rm -rf "$T"
	exit 0
fi

# --- 1. install --------------------------------------------------------
check "make install into a staging root" \
	eval 'make -s -C "$ROOT" BUILD="$BUILD" install DESTDIR="$T/root" >"$T/install.log" 2>&1'
R=$T/root/usr/local
check "installed: libsqlvdi.so, libsqlvdi.a, sqlvdi.pc" \
	test -e "$R/lib/libsqlvdi.so" -a -e "$R/lib/libsqlvdi.a" -a -e "$R/lib/pkgconfig/sqlvdi.pc"
check "installed: include/sqlvdi/vdi.h and vdierror.h beside libvdi's include/vdi.h" \
	test -e "$R/include/sqlvdi/vdi.h" -a -e "$R/include/sqlvdi/vdierror.h" -a -e "$R/include/vdi.h"
check "the soname is libsqlvdi.so" \
	eval 'objdump -p "$R/lib/libsqlvdi.so" | grep -q "SONAME *libsqlvdi.so$"'
export PKG_CONFIG_PATH=$R/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$T/root
flags=$(pkg-config --cflags --libs sqlvdi 2>&1)
check "pkg-config --cflags --libs sqlvdi: $flags" \
	eval 'case "$flags" in *"-I$R/include/sqlvdi"*"-lsqlvdi"*) true ;; *) false ;; esac'

# --- 2. exports --------------------------------------------------------
cat >"$T/want" <<'SYMS'
_ZN19ClientVirtualDevice10GetCommandElPP11VDC_Command
_ZN19ClientVirtualDevice15CompleteCommandEP11VDC_Commandiml
_ZN19ClientVirtualDeviceC1Ev
_ZN19ClientVirtualDeviceC2Ev
_ZN19ClientVirtualDeviceD1Ev
_ZN19ClientVirtualDeviceD2Ev
_ZN22ClientVirtualDeviceSet10OpenDeviceEPcPP19ClientVirtualDevice
_ZN22ClientVirtualDeviceSet11SignalAbortEv
_ZN22ClientVirtualDeviceSet15GetBufferHandleEPhPj
_ZN22ClientVirtualDeviceSet15MapBufferHandleEiPPh
_ZN22ClientVirtualDeviceSet15OpenInSecondaryEPc
_ZN22ClientVirtualDeviceSet16GetConfigurationElP8VDConfig
_ZN22ClientVirtualDeviceSet20RegisterDeviceClosedEv
_ZN22ClientVirtualDeviceSet5CloseEv
_ZN22ClientVirtualDeviceSet6CreateEPcP8VDConfig
_ZN22ClientVirtualDeviceSetC1Ev
_ZN22ClientVirtualDeviceSetC2Ev
_ZN22ClientVirtualDeviceSetD1Ev
_ZN22ClientVirtualDeviceSetD2Ev
SYMS
nm -D --defined-only "$R/lib/libsqlvdi.so" | awk '$2 ~ /^[TtWw]$/ { print $3 }' | sort >"$T/got"
check "libsqlvdi.so exports exactly the members of the fact sheet (diff: $(diff "$T/want" "$T/got" | tr '\n' ' '))" \
	cmp -s "$T/want" "$T/got"

# --- 3. the ABI program ------------------------------------------------
san=()
echo 'int main(void){return 0;}' >"$T/probe.cpp"
"$CXX" -fsanitize=address,undefined -o "$T/probe" "$T/probe.cpp" 2>/dev/null && san=(-fsanitize=address,undefined)
# shellcheck disable=SC2086
check "tests/sqlvdi/abi.cpp builds against the installed headers alone${san:+ (ASan+UBSan)}" \
	eval '"$CXX" -std=c++11 -Wall -Wextra -Werror -g ${san[*]} -o "$T/abi" "$ROOT/tests/sqlvdi/abi.cpp" $flags -lpthread >"$T/cc.log" 2>&1' ||
	cat "$T/cc.log" >&2
mkdir -p "$T/data"
head -c 3000000 /dev/urandom >"$T/data/abi.mdf"
if [ -x "$T/abi" ]; then
	VDI_DATA_DIR=$T/data LD_LIBRARY_PATH=$R/lib timeout -k 5 120 "$T/abi" "$BDIR/vdi" >"$T/abi.out" 2>&1
	rc=$?
	grep -E "FAIL|ERROR|Sanitizer|runtime error" "$T/abi.out" >&2
	check "the ABI program: $(tail -n 1 "$T/abi.out") ($(grep -c ': ok: ' "$T/abi.out") checks passed, exit $rc)" \
		test "$rc" -eq 0
fi

# --- 4. libraries that are not Microsoft's ABI -------------------------
out=$("$BDIR/vdi" pipe --sqlvdi="$T/none.so" -s sqlvdi-abi-x 2>&1)
rc=$?
check "vdi pipe --sqlvdi=<missing>: exit 2 and names the path: $out" \
	eval 'test $rc -eq 2 && case "$out" in *"$T/none.so"*"cannot be loaded"*) true ;; *) false ;; esac'
echo 'int unrelated(void) { return 0; }' >"$T/other.c"
cc -shared -fPIC -o "$T/other.so" "$T/other.c"
out=$("$BDIR/vdi" pipe --sqlvdi="$T/other.so" -s sqlvdi-abi-x 2>&1)
rc=$?
check "vdi pipe --sqlvdi=<no symbols>: exit 2, names the missing member: $out" \
	eval 'test $rc -eq 2 && case "$out" in *"ClientVirtualDeviceSet::ClientVirtualDeviceSet()"*) true ;; *) false ;; esac'

# A Microsoft-style client (tests/sqlvdi/client.cpp), built against the
# installed headers and -lsqlvdi alone, that starts its statement with
# `sqlcmd` from PATH: here the staged vdi-sqlcmd under that name.
check "tests/sqlvdi/client.cpp builds against the installed headers alone" \
	eval '"$CXX" -std=c++11 -Wall -Wextra -Werror -g -o "$T/client" "$ROOT/tests/sqlvdi/client.cpp" $flags -luuid -lpthread >"$T/cc2.log" 2>&1' ||
	cat "$T/cc2.log" >&2
mkdir -p "$T/bin"
ln -sf "$R/bin/vdi-sqlcmd" "$T/bin/sqlcmd"
if [ -x "$T/client" ]; then
	head -c 5000123 /dev/urandom >"$T/data/ms.mdf"
	cp "$T/data/ms.mdf" "$T/ms.orig"
	for nd in 1 4; do
		run_client() { # B|R D|L NDEV [ABORT_AFTER]
			PATH=$T/bin:$PATH VDI_DATA_DIR=$T/data LD_LIBRARY_PATH=$R/lib \
				timeout -k 5 120 "$T/client" "$1" "$2" ms sa secret "$T/ms.$nd" "$3" ${4:-} >"$T/client.out" 2>&1
		}
		check "Microsoft-style client, $nd device(s): BACKUP DATABASE ... WITH FORMAT through sqlcmd" \
			run_client B D "$nd" || cat "$T/client.out" >&2
		grep -q "BACKUP DATABASE successfully processed" "$T/client.out" ||
			check "... and sqlcmd said so: $(cat "$T/client.out")" false
		head -c 1000 /dev/urandom >"$T/data/ms.mdf" # the restore must replace it
		check "Microsoft-style client, $nd device(s): RESTORE DATABASE ... WITH REPLACE, byte-identical" \
			eval 'run_client R D "$nd" && cmp -s "$T/data/ms.mdf" "$T/ms.orig"' ||
			cat "$T/client.out" >&2
		cp "$T/data/ms.mdf" "$T/before-abort"
		check "Microsoft-style client, $nd device(s): SignalAbort mid-restore fails both sides, database untouched" \
			eval '! run_client R D "$nd" 1048576 && grep -q "terminating abnormally" "$T/client.out" && cmp -s "$T/data/ms.mdf" "$T/before-abort"'
	done
	check "no shared memory left by the client runs" \
		eval '! ls /dev/shm | grep -qE "^vdi[.-].*[0-9a-f]{8}-[0-9a-f]{4}-"'
fi
mkdir -p "$T/mnt"
out=$(timeout 10 "$BDIR/vdifs" "$T/mnt" -f -o sqlvdi="$T/other.so" 2>&1)
rc=$?
check "vdifs -o sqlvdi=<no symbols>: the mount is refused and says why: $out" \
	eval 'test $rc -ne 0 && ! mountpoint -q "$T/mnt" && case "$out" in *"$T/other.so"*"Microsoft"*) true ;; *) false ;; esac'
