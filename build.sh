#!/usr/bin/env bash
# CudaDream build entry point (Linux/macOS). Windows: build.ps1 does the same.
#   ./build.sh                 restore, build Release, leave the CLI at artifacts/cudadream
#   ./build.sh test [--slow]   build, run every test project, end with "N passed, N failed, N skipped"
#                              (--slow also runs the suites tagged Category=Slow)
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

cmd="${1:-build}"; [ $# -gt 0 ] && shift
case "$cmd" in
  build) build ;;
  test) build; run_tests "$@" ;;
  *) echo "usage: ./build.sh [build|test [--slow]]" >&2; exit 2 ;;
esac
