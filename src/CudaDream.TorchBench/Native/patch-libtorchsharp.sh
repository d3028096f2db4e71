#!/usr/bin/env bash
# Makes TorchSharp's libLibTorchSharp.so in folder DIR load on a libstdc++ older than GCC 13's (Debian bookworm has
# GCC 12's): see ios_base_library_init.cpp. Does nothing where the system libstdc++ already has GLIBCXX_3.4.32, or
# where DIR was patched before. Needs g++, patchelf (Debian package patchelf) and python3.
#   patch-libtorchsharp.sh DIR
set -euo pipefail
dir="$1"
here="$(cd "$(dirname "$0")" && pwd)"
lib="$dir/libLibTorchSharp.so"
shim=libcudadream_ios_base_library_init.so
[ -f "$lib" ] || { echo "patch-libtorchsharp: no $lib" >&2; exit 1; }
libstdcxx=$(g++ -print-file-name=libstdc++.so.6 2>/dev/null || true)
for candidate in "$libstdcxx" /usr/lib/x86_64-linux-gnu/libstdc++.so.6 /lib/x86_64-linux-gnu/libstdc++.so.6; do
  [ -f "$candidate" ] && { libstdcxx=$(readlink -f "$candidate"); break; }
done
if grep -q GLIBCXX_3.4.32 "$libstdcxx" 2>/dev/null; then exit 0; fi
if readelf -d "$lib" | grep -q "$shim"; then exit 0; fi
for tool in g++ patchelf python3; do
  command -v "$tool" > /dev/null || { echo "patch-libtorchsharp: $libstdcxx is older than libLibTorchSharp.so needs (GLIBCXX_3.4.32); fixing that needs $tool (apt-get install ${tool/g++/g++})" >&2; exit 1; }
done
g++ -O2 -shared -fPIC -o "$dir/$shim" "$here/ios_base_library_init.cpp" -Wl,--version-script="$here/ios_base_library_init.map"
patchelf --add-needed "$shim" "$lib"   # the library's RUNPATH has $ORIGIN: the shim is found beside it
python3 "$here/weak_version_need.py" "$lib" GLIBCXX_3.4.32 > /dev/null
echo "patch-libtorchsharp: $lib now loads on $(basename "$libstdcxx") (shim $shim)"
