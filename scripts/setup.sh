#!/usr/bin/env bash
# Installs the Debian packages vdifs needs to build and test, if missing.
# Safe to run again; needs root (or sudo) only when something is missing.
set -euo pipefail
pkgs=(gcc make pkg-config libfuse3-dev fuse3 uuid-dev check)
[ "${VDI_SETUP_EXTRA:-}" ] && read -r -a extra <<<"$VDI_SETUP_EXTRA" && pkgs+=("${extra[@]}")
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
