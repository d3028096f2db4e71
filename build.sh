#!/usr/bin/env bash
# CudaDream build entry point (Linux/macOS). Windows: build.ps1 does the same.
#   ./build.sh                 restore, build Release, leave the CLI at artifacts/cudadream
#   ./build.sh test [--slow]   build, run every test project, end with "N passed, N failed, N skipped"
#                              (the CPU kernel tests run twice more: DOTNET_EnableAVX512=0, DOTNET_EnableAVX2=0)
#                              (--slow also runs the suites tagged Category=Slow)
#   ./build.sh kernels         fetch Debian's NVRTC 11.8 and 12 into artifacts/nvrtc (no GPU needed) and
#                              compile every kernel: sm_75..sm_90 with NVRTC 11.8, sm_90a with NVRTC 12;
#                              also builds the emulator libraries (g++). Fails on any compile error.
#   ./build.sh fuzz [--minutes N] [--seed S] [--target NAME]
#                              nightly fuzzing: the seeded in-process mutation fuzzer over every parser harness
#                              (tests/CudaDream.Fuzz), N minutes split over the harnesses (default 10); crashing
#                              inputs and report.json land in artifacts/fuzz; exit 1 when a crash was found.
#   ./build.sh device-check [--no-dry-run]
#                              build artifacts/device-check/cudadream-device-check(-linux-x64.tar.gz): a
#                              self-contained linux-x64 CLI (no .NET, no ONNX Runtime natives), the sd-tiny
#                              fixtures and device-check.sh, the CUDA test matrix for a bare GPU machine;
#                              then dry-run it here with --backend emu (not a GPU result).
#   ./build.sh bench-compare   build, publish the PyTorch side of `cudadream bench --compare` (bench-only, libtorch CPU)
#                              to artifacts/torchbench/cudadream-torchbench.dll and run its checks (tests/CudaDream.TorchBench.Check).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
ART="$ROOT/artifacts"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

build() {
  dotnet build CudaDream.sln -c Release -nologo -v q -clp:NoSummary
  dotnet publish src/CudaDream.Cli/CudaDream.Cli.csproj -c Release --no-build -nologo -v q -o "$ART/bin"
  cat > "$ART/cudadream" <<'LAUNCH'
#!/usr/bin/env bash
here="$(cd "$(dirname "$(readlink -f "$0")")" && pwd)"
exec dotnet "$here/bin/cudadream.dll" "$@"
LAUNCH
  chmod +x "$ART/cudadream"
  # The embedded default model, pretrained by `cudadream pretrain-tiny` and kept in the repository (models/tiny-sd/README.md):
  # the CLI's default model folder is a copy of it, refreshed on every build.
  rm -rf "$ART/models/tiny-sd"; mkdir -p "$ART/models"
  cp -r models/tiny-sd "$ART/models/tiny-sd"
  echo "built: $ART/cudadream"
}

run_tests() {
  local slow=0
  for a in "$@"; do [ "$a" = "--slow" ] && slow=1; done
  local filter="Category!=Slow"
  [ $slow = 1 ] && filter=""
  local results="$ART/test-results"
  rm -rf "$results"; mkdir -p "$results"
  local rc=0
  for proj in tests/*.Tests/*.Tests.csproj; do
    local name; name=$(basename "$proj" .csproj)
    echo "== $name"
    dotnet test "$proj" -c Release --no-build -nologo ${filter:+--filter "$filter"} \
      --logger "trx;LogFileName=$name.trx" --logger "console;verbosity=minimal" \
      --results-directory "$results" || rc=1
  done
  # The ISA matrix: the CPU kernel tests again with the runtime's AVX-512, then AVX2, switched off, so the 256-bit and
  # the 128-bit (ARM64-like) kernels stay checked against the references on a machine that would pick a wider one.
  for isa in AVX512 AVX2; do
    echo "== CudaDream.Engine.Tests (CPU kernels, DOTNET_Enable$isa=0)"
    env "DOTNET_Enable$isa=0" dotnet test tests/CudaDream.Engine.Tests/CudaDream.Engine.Tests.csproj -c Release --no-build -nologo \
      --filter "FullyQualifiedName~CudaDream.Engine.Tests.Cpu.${filter:+&$filter}" \
      --logger "trx;LogFileName=CudaDream.Engine.Tests.no-$isa.trx" --logger "console;verbosity=minimal" \
      --results-directory "$results" || rc=1
  done
  local passed=0 failed=0 skipped=0
  for trx in "$results"/*.trx; do
    [ -f "$trx" ] || continue
    local counters; counters=$(grep -o '<Counters [^>]*>' "$trx" | head -1)
    local p f t e n
    p=$(sed -n 's/.* passed="\([0-9]*\)".*/\1/p' <<<"$counters"); f=$(sed -n 's/.* failed="\([0-9]*\)".*/\1/p' <<<"$counters")
    # A skipped test is counted in total but not executed (trx has no "skipped" counter).
    t=$(sed -n 's/.* total="\([0-9]*\)".*/\1/p' <<<"$counters"); e=$(sed -n 's/.* executed="\([0-9]*\)".*/\1/p' <<<"$counters")
    n=$(( ${t:-0} - ${e:-0} ))
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${n:-0}))
  done
  echo "$passed passed, $failed failed, $skipped skipped"
  [ $failed = 0 ] && [ $rc = 0 ]
}

# Debian's NVRTC packages (contrib/non-free), downloaded with a private apt configuration and
# unpacked with dpkg -x under artifacts/nvrtc: nothing system-wide changes.
fetch_nvrtc() {
  local dest="$ART/nvrtc" lib="$ART/nvrtc/usr/lib/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)"
  if [ -e "$lib/libnvrtc.so.11.2" ] && [ -e "$lib/libnvrtc.so.12" ]; then echo "$lib"; return; fi
  local apt="$ART/apt"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs" "$dest"
  printf '%s\n' "deb http://deb.debian.org/debian bookworm main contrib non-free" \
                 "deb http://deb.debian.org/debian trixie main contrib non-free" > "$apt/sources.list"
  local o=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
           -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Debug::NoLocking=1)
  apt-get "${o[@]}" update -qq >&2
  (cd "$apt/debs" && apt-get "${o[@]}" download -qq libnvrtc11.2 libnvrtc-builtins11.8 libnvrtc12 \
     "$(apt-cache "${o[@]}" depends libnvrtc12 | sed -n 's/.*Depends: \(libnvrtc-builtins[0-9.]*\).*/\1/p' | head -1)" >&2)
  for d in "$apt/debs"/*.deb; do dpkg -x "$d" "$dest"; done
  echo "$lib"
}

build_kernels() {
  local lib; lib=$(fetch_nvrtc)
  CUDADREAM_NVRTC_PATH="$lib/libnvrtc.so.11.2" "$ART/cudadream" kernels build --arch sm_75,sm_80,sm_86,sm_89,sm_90
  CUDADREAM_NVRTC_PATH="$lib/libnvrtc.so.12" "$ART/cudadream" kernels build --arch sm_90a
  "$ART/cudadream" kernels build --emu
}

# The fixture files device-check.sh runs graph run/grad on (tests/fixtures/sd-tiny).
DEVICE_CHECK_FIXTURES=(README.md text_encoder/model.onnx unet/model.onnx unet/weights.pb unet_opset17/model.onnx
  vae_decoder/model.onnx vae_encoder/model.onnx refs/text_encoder.safetensors refs/unet.safetensors
  refs/unet_lora_grad.safetensors refs/vae_decoder.safetensors refs/vae_encoder.safetensors)
DEVICE_CHECK_MAX_BYTES=$((48 * 1024 * 1024))

device_check() {
  local dry=1
  for a in "$@"; do [ "$a" = "--no-dry-run" ] && dry=0; done
  local root="$ART/device-check" name=cudadream-device-check
  local bundle="$root/$name"
  rm -rf "$root"; mkdir -p "$bundle/fixtures/sd-tiny"
  # Partial trimming trims the framework only (our assemblies, CommandLineParser and protobuf stay whole).
  dotnet publish src/CudaDream.Cli/CudaDream.Cli.csproj -c Release -r linux-x64 --self-contained -nologo -v q \
    -p:PublishTrimmed=true -p:TrimMode=partial -p:SuppressTrimAnalysisWarnings=true \
    -p:JsonSerializerIsReflectionEnabledByDefault=true -p:DebugType=none -o "$bundle/bin"
  # graph run/grad use neither ONNX Runtime nor images: drop their native libraries (the GPU package's CUDA
  # provider alone is 280 MB), and the runtime's debugger, tracing and alternative-GC libraries.
  rm -f "$bundle"/bin/libonnxruntime*.so "$bundle"/bin/libSkiaSharp.so "$bundle"/bin/libmscordaccore.so \
    "$bundle"/bin/libmscordbi.so "$bundle"/bin/libclrgc*.so "$bundle"/bin/libcoreclrtraceptprovider.so
  for f in "${DEVICE_CHECK_FIXTURES[@]}"; do
    mkdir -p "$bundle/fixtures/sd-tiny/$(dirname "$f")"
    cp "tests/fixtures/sd-tiny/$f" "$bundle/fixtures/sd-tiny/$f"
  done
  cp src/CudaDream.Cli/device-check.sh "$bundle/device-check.sh"
  chmod +x "$bundle/device-check.sh" "$bundle/bin/cudadream"
  cat > "$bundle/README.txt" <<'README'
CudaDream device check (linux-x64, self-contained)

Needs: the NVIDIA driver and the CUDA 12 or 13 runtime libraries NVRTC and cuBLAS (libnvrtc.so.12/13,
libcublas.so.12/13; /usr/local/cuda*/lib64 is searched). Nothing else: no .NET, no CUDA SDK.

  ./device-check.sh                 every kernel vs the CPU reference, graph run/grad on the sd-tiny
                                    fixtures vs PyTorch, compute-sanitizer where installed
  ./device-check.sh --backend cuda:1
Report: report-<time>/report.txt and report.json; exit code 0 when everything passes.
README
  local bytes; bytes=$(du -sb "$bundle" | cut -f1)
  echo "bundle: $bundle ($((bytes / 1024 / 1024)) MB)"
  if [ "$bytes" -gt $DEVICE_CHECK_MAX_BYTES ]; then echo "device-check bundle is over 48 MB" >&2; exit 1; fi
  tar -czf "$root/$name-linux-x64.tar.gz" -C "$root" "$name"
  echo "archive: $root/$name-linux-x64.tar.gz ($(( $(stat -c %s "$root/$name-linux-x64.tar.gz") / 1024 / 1024 )) MB)"
  if [ $dry = 1 ]; then
    echo "dry run with --backend emu (the CUDA kernels on the emulator; not a GPU result):"
    "$bundle/device-check.sh" --backend emu --out "$root/dry-run"
  fi
}

# TorchSharp's native library needs GCC 13's libstdc++; on an older one it is patched at build time, with patchelf
# (src/CudaDream.TorchBench/Native/patch-libtorchsharp.sh).
bench_compare() {
  command -v patchelf > /dev/null || { [ "$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q patchelf; } || true
  dotnet publish src/CudaDream.TorchBench/CudaDream.TorchBench.csproj -c Release -nologo -v q -o "$ART/torchbench"
  dotnet test tests/CudaDream.TorchBench.Check/CudaDream.TorchBench.Check.csproj -c Release -nologo --logger "console;verbosity=minimal"
  echo "built: $ART/torchbench/cudadream-torchbench.dll (run: dotnet $ART/torchbench/cudadream-torchbench.dll --help)"
}

cmd="${1:-build}"; [ $# -gt 0 ] && shift
case "$cmd" in
  build) build ;;
  test) build; run_tests "$@" ;;
  kernels) build; build_kernels ;;
  device-check) device_check "$@" ;;
  bench-compare) build; bench_compare ;;
  fuzz) build; minutes=10; rest=()
        while [ $# -gt 0 ]; do case "$1" in --minutes) minutes="$2"; shift 2 ;; *) rest+=("$1"); shift ;; esac; done
        dotnet "tests/CudaDream.Fuzz/bin/Release/net10.0/cudadream-fuzz.dll" --minutes "$minutes" --out "$ART/fuzz" "${rest[@]}" ;;
  *) echo "usage: ./build.sh [build|test [--slow]|kernels|device-check [--no-dry-run]|fuzz [--minutes N]|bench-compare]" >&2; exit 2 ;;
esac
