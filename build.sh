#!/usr/bin/env bash
# CudaDream build entry point (Linux/macOS). Windows: build.ps1 does the same.
#   ./build.sh                 restore, build Release, leave the CLI at artifacts/cudadream
#   ./build.sh test [--slow]   build, run every test project, end with "N passed, N failed, N skipped"
#                              (--slow also runs the suites tagged Category=Slow)
#   ./build.sh kernels         fetch Debian's NVRTC 11.8 and 12 into artifacts/nvrtc (no GPU needed) and
#                              compile every kernel: sm_75..sm_90 with NVRTC 11.8, sm_90a with NVRTC 12;
#                              also builds the emulator libraries (g++). Fails on any compile error.
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
  # The embedded default model: the sd-tiny checkpoint imported into CudaDream's own graphs (models/tiny-sd/README.md).
  if [ ! -f "$ART/models/tiny-sd/model_index.json" ]; then
    "$ART/cudadream" import tests/fixtures/sd-tiny/checkpoint.safetensors --out "$ART/models/tiny-sd" \
      --config tests/fixtures/sd-tiny/configs --tokenizer tests/fixtures/sd-tiny/tokenizer > /dev/null
  fi
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
  local passed=0 failed=0 skipped=0
  for trx in "$results"/*.trx; do
    [ -f "$trx" ] || continue
    local counters; counters=$(grep -o '<Counters [^>]*>' "$trx" | head -1)
    local p f n
    p=$(sed -n 's/.* passed="\([0-9]*\)".*/\1/p' <<<"$counters"); f=$(sed -n 's/.* failed="\([0-9]*\)".*/\1/p' <<<"$counters")
    n=$(sed -n 's/.* notExecuted="\([0-9]*\)".*/\1/p' <<<"$counters")
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

cmd="${1:-build}"; [ $# -gt 0 ] && shift
case "$cmd" in
  build) build ;;
  test) build; run_tests "$@" ;;
  kernels) build; build_kernels ;;
  *) echo "usage: ./build.sh [build|test [--slow]|kernels]" >&2; exit 2 ;;
esac
