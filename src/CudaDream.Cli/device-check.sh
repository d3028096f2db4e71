#!/usr/bin/env bash
# CudaDream device check: the whole CUDA test matrix on a bare GPU machine.
# Needs only the NVIDIA driver and the CUDA 12 or 13 runtime libraries NVRTC and cuBLAS (no SDK, no
# .NET: the bundle is self-contained). compute-sanitizer (memcheck, racecheck, synccheck, initcheck)
# runs over the kernel cases when it is installed.
#
#   ./device-check.sh                      check GPU 0, report in ./report-<time>/
#   ./device-check.sh --backend cuda:1     another GPU
#   ./device-check.sh --backend emu        dry run on the CUDA emulator (needs g++; not a GPU result)
#   ./device-check.sh --out DIR --no-sanitizer
# Exit code 0 when every check passes. The report: DIR/report.txt and DIR/report.json.
set -uo pipefail
here="$(cd "$(dirname "$(readlink -f "$0")")" && pwd)"
backend=cuda
out="$PWD/report-$(date +%Y%m%d-%H%M%S)"
sanitize=1
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) backend="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --no-sanitizer) sanitize=0; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "device-check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
cli="$here/bin/cudadream"

# CUDA toolkits install their libraries outside the loader's path: make NVRTC and cuBLAS findable.
for d in ${CUDA_LIB_DIR:-} /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-1[23]*/lib64 \
         /usr/local/cuda-1[23]*/targets/x86_64-linux/lib; do
  [ -d "$d" ] && LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 CUDADREAM_CACHE="$out/kernel-cache"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -a)"
  echo "backend: $backend"
  echo "LD_LIBRARY_PATH: $LD_LIBRARY_PATH"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=index,name,driver_version,compute_cap,memory.total --format=csv 2>&1
  else
    echo "nvidia-smi: not found"
  fi
  echo "libraries:"
  ldconfig -p 2>/dev/null | grep -E "libcuda\.so|libnvrtc\.so|libcublas\.so" | sed 's/^/  /'
} > "$out/environment.txt"
cat "$out/environment.txt"

"$cli" device-check --backend "$backend" --fixtures "$here/fixtures/sd-tiny" --out "$out/checks"
echo "checks exit code: $?"

sanitizer=""
for c in "$(command -v compute-sanitizer 2>/dev/null)" /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda-1[23]*/bin/compute-sanitizer \
         /opt/nvidia/compute-sanitizer/compute-sanitizer; do
  [ -n "$c" ] && [ -x "$c" ] && { sanitizer="$c"; break; }
done
for tool in memcheck racecheck synccheck initcheck; do
  rm -f "$out/sanitizer-$tool.rc" "$out/sanitizer-$tool.log"
  if [ $sanitize = 0 ]; then continue; fi
  if [[ "$backend" != cuda* ]]; then echo "not applicable to backend $backend" > "$out/sanitizer-$tool.log"; continue; fi
  if [ -z "$sanitizer" ]; then
    echo "compute-sanitizer not found: $tool skipped" | tee "$out/sanitizer-$tool.log"; continue
  fi
  echo "compute-sanitizer --tool $tool over the kernel cases ..."
  "$sanitizer" --tool "$tool" --error-exitcode 99 --log-file "$out/sanitizer-$tool.log" \
    "$cli" device-check --backend "$backend" --only kernels --out "$out/sanitizer-$tool" > "$out/sanitizer-$tool.stdout" 2>&1
  echo $? > "$out/sanitizer-$tool.rc"
done

"$cli" device-check --summarize --out "$out"
