#!/usr/bin/env bash
# Prepare (once, cached) what the qemu aarch64 firmware test needs, outside git:
#   1. an arm64 Debian sysroot with python3.11 and the few shared libraries numpy and LiteRT load,
#      plus a plausible aarch64 /proc/cpuinfo (qemu-user's -L prefix redirects absolute paths that
#      exist under it, /proc/cpuinfo included; XNNPACK's cpuinfo crashes without one);
#   2. the real aarch64 wheels of the `rpi4` board (numpy, ai-edge-litert), downloaded by the same
#      code `ganglion firmware build` uses (pip download with several manylinux aarch64 tags).
# Prints two lines, SYSROOT=... and WHEELHOUSE=..., which the test reads. Reruns cost a second.
# Needs root (or sudo) for `dpkg --add-architecture arm64` and `apt-get update`; nothing is installed
# on the host: the .debs are fetched with `apt-get download` and unpacked with `dpkg-deb -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${GANGLION_QEMU_CACHE:-$HOME/.cache/ganglion-qemu}
SYSROOT=$CACHE/sysroot-bookworm-arm64
WHEELHOUSE=${GANGLION_WHEEL_CACHE:-$HOME/.cache/ganglion-wheels}/rpi4
PY=${PYTHON:-.venv/bin/python}
# What `python3.11 -c "import numpy, ai_edge_litert"` needs: python3.11's own dependencies (from
# `apt-cache depends`, less the ones only optional modules use), plus libstdc++/libgcc for LiteRT.
PKGS=(libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 libuuid1
      libcrypt1 libsqlite3-0 libncursesw6 libtinfo6 libreadline8
      libpython3.11-minimal libpython3.11-stdlib python3.11-minimal)

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

prepare_sysroot() {
  [ -f "$SYSROOT/.ganglion-ready" ] && return 0
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
  fi
  if ! ls /var/lib/apt/lists/*binary-arm64_Packages* >/dev/null 2>&1; then
    $SUDO apt-get update -qq
  fi
  local debs=$CACHE/debs
  mkdir -p "$debs" "$SYSROOT.tmp"
  (cd "$debs" && apt-get download -qq "${PKGS[@]/%/:arm64}")
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$SYSROOT.tmp"; done
  write_cpuinfo "$SYSROOT.tmp"
  touch "$SYSROOT.tmp/.ganglion-ready"
  rm -rf "$SYSROOT" && mv "$SYSROOT.tmp" "$SYSROOT"
}

# A Raspberry Pi 4 (4x Cortex-A72) as the kernel prints it: CPU part 0xd08, features with asimd.
write_cpuinfo() {
  local root=$1
  mkdir -p "$root/proc"
  : > "$root/proc/cpuinfo"
  for i in 0 1 2 3; do
    cat >> "$root/proc/cpuinfo" <<EOF
processor	: $i
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

EOF
  done
}

prepare_wheels() {
  mkdir -p "$WHEELHOUSE"
  "$PY" -m firmware.wheels --board rpi4 --cache "$WHEELHOUSE" >&2
}

prepare_sysroot
prepare_wheels
echo "SYSROOT=$SYSROOT"
echo "WHEELHOUSE=$WHEELHOUSE"
