#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# fs_sqlvdi.sh - issue 9: everything users see works the same on both
# client backends.  Runs the backup, restore, stripe, abort and kill cases
# (fs_tools, fs_stripes, fs_faults, fs_tar, fs_media, fault_matrix) a second time with vdifs over
# the Microsoft-ABI backend (-o sqlvdi=build/libsqlvdi.so, libvdi's own
# library with Microsoft's ABI), against `vdi exec`.  The scripts are the
# same; only the mount option differs (fs_lib.bash, fault_lib.bash: VDIFS_BACKEND).
set -u
here=$(cd "$(dirname "$0")" && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) BDIR=$BUILD ;; *) BDIR=$here/../../$BUILD ;; esac
if [ ! -e "$BDIR/libsqlvdi.so" ]; then
	echo "fs_sqlvdi: skipped: $BDIR/libsqlvdi.so was not built (no C++ compiler)"
	exit 0
fi
failed=0
for t in fs_tools fs_stripes fs_faults fs_tar fs_media fault_matrix; do
	VDIFS_BACKEND=sqlvdi bash "$here/$t.sh" || failed=$((failed + 1))
done
[ "$failed" -eq 0 ] && echo "fs_sqlvdi: all passed" || echo "fs_sqlvdi: $failed script(s) failed"
exit "$failed"
