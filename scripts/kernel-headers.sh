#!/bin/sh
# Make kernel headers available to bcc for the running kernel (idempotent).
#
# bcc compiles trproxy's eBPF program against /lib/modules/$(uname -r)/build (and /source).
# Kernels without a matching headers package (custom or cloud kernels) get the distribution's
# generic headers instead: the program only uses stable UAPI (include/uapi/linux/bpf.h), so
# older headers work as long as they know the hooks used (Linux >= 5.10).
#
# Steps: if /lib/modules/$(uname -r)/build already has headers, do nothing. Otherwise
# install the headers of the running kernel if the distribution has them, else the
# generic meta-package (Debian: linux-headers-amd64 / -arm64), and point build/source at
# the newest installed /usr/src/linux-headers-* tree.
set -eu

release=$(uname -r)
moddir=/lib/modules/$release

if [ -d "$moddir/build/include" ]; then
    echo "kernel headers for $release: $(readlink -f "$moddir/build")"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "run as root: sudo $0" >&2
    exit 1
fi

arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
if ! ls -d /usr/src/linux-headers-*-"$arch" >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    if apt-cache show "linux-headers-$release" >/dev/null 2>&1; then
        apt-get install -y -qq "linux-headers-$release"
    else
        apt-get install -y -qq "linux-headers-$arch"
    fi
fi

if [ -d "$moddir/build/include" ]; then  # the exact package provides the links itself
    echo "kernel headers for $release: $(readlink -f "$moddir/build")"
    exit 0
fi

# Newest installed version, e.g. /usr/src/linux-headers-6.1.0-56-amd64.
build=$(ls -d /usr/src/linux-headers-*-"$arch" 2>/dev/null | sort -V | tail -n 1)
if [ -z "$build" ]; then
    echo "no /usr/src/linux-headers-*-$arch after installing; cannot continue" >&2
    exit 1
fi
version=${build#/usr/src/linux-headers-}
version=${version%-"$arch"}
source=/usr/src/linux-headers-$version-common
[ -d "$source" ] || source=$build

mkdir -p "$moddir"
for link in build source; do
    if [ -e "$moddir/$link" ] && [ ! -L "$moddir/$link" ]; then
        echo "$moddir/$link exists and is not a symlink; move it away first" >&2
        exit 1
    fi
done
ln -sfn "$build" "$moddir/build"
ln -sfn "$source" "$moddir/source"
echo "kernel headers for $release: $build (source: $source)"
