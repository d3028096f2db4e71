# CudaDream build entry point on Windows; does what build.sh does.
#   .\build.ps1                 restore, build Release, leave the CLI at artifacts\cudadream.cmd
#   .\build.ps1 test [-Slow]    build, run every test project, end with "N passed, N failed, N skipped"
#   .\build.ps1 bench-compare   build, publish the PyTorch side of `cudadream bench --compare` (bench-only, libtorch CPU)
#                               to artifacts\torchbench\cudadream-torchbench.dll and run its checks (tests\CudaDream.TorchBench.Check)
param([string]$Command = "build", [switch]$Slow)
$ErrorActionPreference = "Stop"
Set-Location $PSScriptRoot
$Art = Join-Path $PSScriptRoot "artifacts"
$env:DOTNET_CLI_TELEMETRY_OPTOUT = "1"; $env:DOTNET_NOLOGO = "1"

function Invoke-Build {
    dotnet build CudaDream.sln -c Release -nologo -v q -clp:NoSummary
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    dotnet publish src/CudaDream.Cli/CudaDream.Cli.csproj -c Release --no-build -nologo -v q -o (Join-Path $Art "bin")
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    Set-Content -Path (Join-Path $Art "cudadream.cmd") -Value "@dotnet `"%~dp0bin\cudadream.dll`" %*"
    # The embedded default model, pretrained by `cudadream pretrain-tiny` and kept in the repository (models/tiny-sd/README.md).
    $tiny = Join-Path $Art "models/tiny-sd"
    if (Test-Path $tiny) { Remove-Item -Recurse -Force $tiny }
    New-Item -ItemType Directory -Force (Join-Path $Art "models") | Out-Null
    Copy-Item -Recurse models/tiny-sd $tiny
    Write-Host "built: $Art\cudadream.cmd"
}

function Invoke-Tests {
    $results = Join-Path $Art "test-results"
    if (Test-Path $results) { Remove-Item -Recurse -Force $results }
    New-Item -ItemType Directory -Force $results | Out-Null
    $filter = if ($Slow) { "" } else { "Category!=Slow" }
    $rc = 0
    foreach ($proj in Get-ChildItem tests/*.Tests/*.Tests.csproj) {
        $name = $proj.BaseName
        Write-Host "== $name"
        $args = @("test", $proj.FullName, "-c", "Release", "--no-build", "-nologo", "--logger", "trx;LogFileName=$name.trx", "--results-directory", $results)
        if ($filter) { $args += @("--filter", $filter) }
        dotnet @args
        if ($LASTEXITCODE -ne 0) { $rc = 1 }
    }
    # The ISA matrix (as build.sh): the CPU kernel tests with AVX-512, then AVX2, switched off in the runtime.
    foreach ($isa in @("AVX512", "AVX2")) {
        Write-Host "== CudaDream.Engine.Tests (CPU kernels, DOTNET_Enable$isa=0)"
        $cpuFilter = "FullyQualifiedName~CudaDream.Engine.Tests.Cpu."
        if ($filter) { $cpuFilter += "&$filter" }
        [Environment]::SetEnvironmentVariable("DOTNET_Enable$isa", "0")
        dotnet test tests/CudaDream.Engine.Tests/CudaDream.Engine.Tests.csproj -c Release --no-build -nologo --filter $cpuFilter `
            --logger "trx;LogFileName=CudaDream.Engine.Tests.no-$isa.trx" --results-directory $results
        if ($LASTEXITCODE -ne 0) { $rc = 1 }
        [Environment]::SetEnvironmentVariable("DOTNET_Enable$isa", $null)
    }
    $p = 0; $f = 0; $s = 0
    foreach ($trx in Get-ChildItem "$results/*.trx") {
        [xml]$x = Get-Content $trx
        $c = $x.TestRun.ResultSummary.Counters
        $p += [int]$c.passed; $f += [int]$c.failed; $s += [int]$c.total - [int]$c.executed  # a skipped test is counted in total, not executed
    }
    Write-Host "$p passed, $f failed, $s skipped"
    if ($f -ne 0 -or $rc -ne 0) { exit 1 }
}

function Invoke-BenchCompare {
    dotnet publish src/CudaDream.TorchBench/CudaDream.TorchBench.csproj -c Release -nologo -v q -o (Join-Path $Art "torchbench")
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    dotnet test tests/CudaDream.TorchBench.Check/CudaDream.TorchBench.Check.csproj -c Release -nologo
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    Write-Host "built: $Art\torchbench\cudadream-torchbench.dll"
}

switch ($Command) {
    "build" { Invoke-Build }
    "test" { Invoke-Build; Invoke-Tests }
    "bench-compare" { Invoke-Build; Invoke-BenchCompare }
    default { Write-Error "usage: .\build.ps1 [build|test [-Slow]|bench-compare]"; exit 2 }
}
