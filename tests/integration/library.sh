#!/usr/bin/env bash
# library.sh - libvdi as a user builds, installs and links it (D31):
#  - `make` and `make install` build no test and never ask for the check
#    library (a pkg-config that refuses `check` records any query);
#  - libvdi.so.0 carries that soname and exports exactly the functions
#    core/vdi.h declares, each at version VDI_0; nothing else;
#  - install honours DESTDIR, PREFIX, LIBDIR and INCLUDEDIR, the .pc file
#    names those directories, and uninstall removes what install put;
#  - a program written against the installed vdi.h links with
#    `pkg-config --libs libvdi` and runs; one that calls an internal
#    function of the library (vdi_fail) does not link.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-build}
SO=$ROOT/$BUILD/libvdi.so.0
T=$(mktemp -d /tmp/vdi-lib.XXXXXX)
fail=0

# The build dir's .pc file names the default directories again at the
# end, whatever the install below asked for.
cleanup() {
	mk "$BUILD/libvdi.pc" >/dev/null 2>&1
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "library: FAIL: $*"; fail=1; }
ok() { echo "library: ok: $*"; }

# A pkg-config that answers everything but `check`, and notes the ask.
cat >"$T/pkg-config" <<EOF
#!/bin/sh
for a in "\$@"; do [ "\$a" = check ] && { echo "\$*" >>"$T/asked-check"; exit 1; }; done
exec pkg-config "\$@"
EOF
chmod +x "$T/pkg-config"

# make in the tree, as a user would run it (not as a sub-make of ours).
mk() {
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
		timeout -k 5 300 make -C "$ROOT" --no-print-directory BUILD="$BUILD" \
		PKG_CONFIG="$T/pkg-config" "$@"
}

# 1. make and make install need no check library and build no test.
mk -n all install BUILD="$T/fresh" DESTDIR="$T/nowhere" >"$T/plan" 2>&1 ||
	die "make -n all install failed: $(tail -3 "$T/plan")"
if grep -q 'tests/' "$T/plan"; then
	die "make all install would build tests: $(grep -m1 'tests/' "$T/plan")"
elif [ -e "$T/asked-check" ]; then
	die "make all install asked pkg-config for check: $(cat "$T/asked-check")"
else
	ok "make and make install build no test and need no check library"
fi

# 2. The soname and the exports: vdi.h's functions, at VDI_0, only.
readelf -d "$SO" | grep -q 'Library soname: \[libvdi.so.0\]' ||
	die "soname of $SO: $(readelf -d "$SO" | grep -i soname)"
cc -fsyntax-only -D_GNU_SOURCE -aux-info "$T/aux" -xc "$ROOT/core/vdi.h" ||
	die "core/vdi.h does not compile alone"
grep 'core/vdi.h:' "$T/aux" | sed -E 's/.* \**([a-z_0-9]+) \(.*/\1/' | sort -u >"$T/declared"
nm -D --defined-only "$SO" | awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' | sort -u >"$T/exported"
extra=$(comm -13 "$T/declared" "$T/exported" | tr '\n' ' ')
missing=$(comm -23 "$T/declared" "$T/exported" | tr '\n' ' ')
[ -z "$extra" ] || die "exported but not in vdi.h: $extra"
[ -z "$missing" ] || die "in vdi.h but not exported: $missing"
unversioned=$(objdump -T "$SO" | awk '$4 == ".text" && $6 != "VDI_0" { print $7 }' | tr '\n' ' ')
[ -z "$unversioned" ] || die "exported without version VDI_0: $unversioned"
[ -s "$T/declared" ] && [ -z "$extra$missing$unversioned" ] &&
	ok "libvdi.so.0 exports the $(wc -l <"$T/declared") functions of vdi.h at VDI_0, nothing else"

# 3. Install where a distribution would, and read the .pc back.
R=$T/root
LIB=/usr/lib/x86_64-linux-gnu
INC=/usr/include/vdifs
mk install DESTDIR="$R" PREFIX=/usr LIBDIR=$LIB INCLUDEDIR=$INC >"$T/install.log" 2>&1 ||
	die "make install failed: $(tail -3 "$T/install.log")"
[ -e "$T/asked-check" ] && die "make install asked pkg-config for check: $(cat "$T/asked-check")"
for f in $LIB/libvdi.a $LIB/libvdi.so.0 $LIB/libvdi.so $LIB/pkgconfig/libvdi.pc $INC/vdi.h \
	/usr/bin/vdi /usr/share/man/man1/vdi.1; do
	[ -e "$R$f" ] || die "make install: $f missing"
done
[ "$(readlink "$R$LIB/libvdi.so")" = libvdi.so.0 ] || die "libvdi.so does not point at libvdi.so.0"
pc=$R$LIB/pkgconfig/libvdi.pc
grep -qx 'prefix=/usr' "$pc" && grep -qx "libdir=$LIB" "$pc" && grep -qx "includedir=$INC" "$pc" ||
	die "libvdi.pc does not name the directories installed to: $(grep -E '^(prefix|libdir|includedir)=' "$pc" | tr '\n' ' ')"
cflags=$(PKG_CONFIG_PATH=$R$LIB/pkgconfig pkg-config --cflags libvdi | xargs)
[ "$cflags" = "-I$INC" ] || die "pkg-config --cflags libvdi = '$cflags', want -I$INC"
[ $fail = 0 ] && ok "make install honours DESTDIR, PREFIX, LIBDIR, INCLUDEDIR; the .pc file says so"

# 4. Link a program against the installed library, the way the README says.
cat >"$T/user.c" <<'EOF'
#include <stdio.h>
#include <vdi.h>
int main(void)
{
	printf("%s %s\n", vdi_strerror(VD_E_ABORT), vdi_set_state_name(VDI_SET_ACTIVE));
	return 0;
}
EOF
libs=$(PKG_CONFIG_PATH=$R$LIB/pkgconfig pkg-config --libs libvdi)
if cc -I"$R$INC" "$T/user.c" -L"$R$LIB" $libs -o "$T/user" 2>"$T/cc.log"; then
	out=$(LD_LIBRARY_PATH=$R$LIB "$T/user")
	[ "$out" = "VD_E_ABORT active" ] || die "linked program printed '$out'"
	readelf -d "$T/user" | grep -q 'NEEDED.*\[libvdi.so.0\]' || die "the program does not need libvdi.so.0"
else
	die "a program using vdi.h does not link: $(head -3 "$T/cc.log")"
fi
cat >"$T/internal.c" <<'EOF'
int vdi_fail(int rc, const char *fmt, ...);
int main(void)
{
	return vdi_fail(1, "x") != 1;
}
EOF
if cc "$T/internal.c" -L"$R$LIB" -lvdi -o "$T/internal" 2>"$T/cc2.log"; then
	die "a program calling the internal vdi_fail links against libvdi.so"
elif ! grep -q 'undefined reference to .vdi_fail' "$T/cc2.log"; then
	die "linking a call of vdi_fail failed otherwise: $(head -3 "$T/cc2.log")"
fi
[ $fail = 0 ] && ok "programs link against the public API only"

# 5. Uninstall takes back everything install put.
mk uninstall DESTDIR="$R" PREFIX=/usr LIBDIR=$LIB INCLUDEDIR=$INC >/dev/null 2>&1 ||
	die "make uninstall failed"
left=$(find "$R" \( -type f -o -type l \) | sed "s|^$R||" | tr '\n' ' ')
[ -z "$left" ] || die "make uninstall left: $left"

[ $fail = 0 ] && echo "library: all passed"
exit $fail
