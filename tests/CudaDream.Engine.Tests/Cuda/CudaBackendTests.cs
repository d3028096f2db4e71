using CudaDream.Engine.Backends;
using CudaDream.Engine.Backends.Cuda;
using CudaDream.Engine.Backends.Cuda.Interop;
using CudaDream.Engine.Ops;
using CudaDream.TestSupport;
using Xunit;

namespace CudaDream.Engine.Tests.Cuda;

/// <summary>The CUDA host path that runs without a GPU: library errors, NVRTC compilation and its report.</summary>
public class CudaBackendTests
{
    [FactWhen(Requirement.NoCudaDriver)]
    public void Without_a_cuda_driver_opening_the_device_fails_with_one_line_naming_the_library()
    {
        var e = Assert.Throws<CudaDreamException>(() => CudaDevice.Open());
        Assert.DoesNotContain('\n', e.Message);
        Assert.Contains(OperatingSystem.IsWindows() ? "nvcuda.dll" : "libcuda.so.1", e.Message);
        Assert.Contains("CUDA driver", e.Message);
    }

    [Fact]
    public void Every_exported_kernel_name_is_unique_and_every_file_exports_kernels()
    {
        var files = KernelSources.KernelFiles;
        Assert.True(files.Count >= 13, $"only {files.Count} kernel files embedded");
        Assert.All(files, f => Assert.NotEmpty(f.Exports));
        var aliases = files.SelectMany(f => f.Exports).Select(e => e.Alias).ToList();
        Assert.Equal(aliases.Count, aliases.Distinct().Count());
        Assert.All(files, f => Assert.DoesNotContain("#include <", f.Text)); // no toolkit header
    }

    [Fact]
    public void Ptxas_report_is_parsed_per_kernel()
    {
        const string log = """
            ptxas info    : 0 bytes gmem
            ptxas info    : Compiling entry function '_Z15softmax_forwardIfEvPKT_PS0_ii' for 'sm_86'
            ptxas info    : Function properties for _Z15softmax_forwardIfEvPKT_PS0_ii
            ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
            ptxas info    : Used 16 registers, 128 bytes smem, 380 bytes cmem[0]
            ptxas info    : Compiling entry function '_Z4fillIfEvPT_xf' for 'sm_86'
            ptxas info    : Function properties for _Z4fillIfEvPT_xf
            ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
            ptxas info    : Used 10 registers, 372 bytes cmem[0]
            """;
        var usage = KernelCompiler.ParseUsage(log, new Dictionary<string, string>
        {
            ["softmax_forward_f32"] = "_Z15softmax_forwardIfEvPKT_PS0_ii", ["fill_f32"] = "_Z4fillIfEvPT_xf",
        });
        Assert.Equal(2, usage.Count);
        Assert.Equal(new KernelResourceUsage("softmax_forward_f32", "_Z15softmax_forwardIfEvPKT_PS0_ii", 16, 128, 8, 4, 12), usage[0]);
        Assert.Equal(new KernelResourceUsage("fill_f32", "_Z4fillIfEvPT_xf", 10, 0, 0, 0, 0), usage[1]);
    }

    [Fact]
    public void Tensor_core_instructions_are_counted_per_kernel_entry_of_the_ptx()
    {
        const string ptx = """
            .version 7.8
            .target sm_80
            .visible .entry _Z5plainPf(
            	.param .u64 _Z5plainPf_param_0
            )
            {
            	fma.rn.f32 	%f3, %f1, %f2, %f3;
            	// mma.sync in a comment is no instruction
            }
            .visible .entry _Z5tiledPf(
            )
            {
            	mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};
            	ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%r1, %r2, %r3, %r4}, [%r9];
            	mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f5, %f6, %f7, %f8}, {%r1, %r2, %r3, %r4}, {%r7, %r8}, {%f5, %f6, %f7, %f8};
            }
            .entry _Z6hopperPf()
            {
            	wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%f1}, %rd1, %rd2, 1, 1, 1, 0, 0;
            }
            """;
        var counts = KernelCompiler.CountMma(ptx);
        Assert.Equal(0, counts["_Z5plainPf"]);
        Assert.Equal(2, counts["_Z5tiledPf"]);
        Assert.Equal(1, counts["_Z6hopperPf"]);
        var use = KernelCompiler.TensorCoreUse(ptx);
        Assert.Equal(2, use["_Z5tiledPf"].Mma["mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"]);
        Assert.Equal(1, use["_Z5tiledPf"].Ldmatrix["ldmatrix.sync.aligned.m8n8.x4.shared.b16"]);
        Assert.Equal(0, use["_Z5plainPf"].LdmatrixCount);
        Assert.Equal(1, use["_Z6hopperPf"].Mma["wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16"]);
    }

    /// <summary>
    /// [G2] The tensor-core attention kernels as NVRTC compiles them to PTX: for sm_80 every one holds mma.sync.m16n8k16 with
    /// operands of its storage type only, and ldmatrix (plain and .trans); for sm_75 the fp16 ones run m16n8k8 (Turing has no
    /// m16n8k16 for f16) and the bf16 ones, which the launcher never picks there, no mma. The fp32-math kernels that serve
    /// bf16 storage otherwise hold none. (Only these kernels are instantiated, to keep the two compiles short.)
    /// </summary>
    [FactWhen(Requirement.Nvrtc)]
    public void Tensor_core_attention_kernels_hold_mma_of_their_storage_type_and_ldmatrix()
    {
        using var cache = TestSupport.Fixtures.TempDir();
        var file = KernelSources.KernelFiles.First(f => f.Name == "attention.cu");
        var mmaKernels = file.Exports.Where(e => e.Alias.StartsWith("attention_mma_", StringComparison.Ordinal)).ToList();
        Assert.Equal(24, mmaKernels.Count); // forward, backward dq and dk/dv for d64/d80/d128/d160, in bf16 and f16
        var fp32Math = file.Exports.Where(e => e.Alias is "attention_forward_bf16" or "attention_backward_dq_bf16" or "attention_backward_dkv_bf16").ToList();
        foreach (var (arch, exports) in new[] { ("compute_80", mmaKernels.Concat(fp32Math).ToList()), ("compute_75", mmaKernels.Where(e => e.Alias.Contains("_d64_")).ToList()) })
        {
            var compiled = KernelCompiler.Compile(file with { Exports = exports }, arch, cache.FullName);
            var use = KernelCompiler.TensorCoreUse(System.Text.Encoding.UTF8.GetString(compiled.Image));
            foreach (var alias in exports.Select(e => e.Alias))
            {
                var u = use[compiled.LoweredNames[alias]];
                if (!alias.StartsWith("attention_mma_", StringComparison.Ordinal))
                {
                    Assert.True(u.MmaCount == 0 && u.LdmatrixCount == 0, $"{arch} {alias}: the fp32-math kernel holds tensor-core instructions");
                    continue;
                }
                string type = alias.EndsWith("_bf16", StringComparison.Ordinal) ? "bf16" : "f16";
                Assert.Contains(u.Ldmatrix.Keys, op => op.Contains(".trans", StringComparison.Ordinal));
                Assert.Contains(u.Ldmatrix.Keys, op => !op.Contains(".trans", StringComparison.Ordinal));
                if (arch == "compute_75" && type == "bf16")
                {
                    Assert.Equal(0, u.MmaCount);
                    continue;
                }
                string shape = arch == "compute_80" ? "m16n8k16" : "m16n8k8";
                Assert.True(u.MmaCount > 0, $"{arch} {alias}: no mma.sync");
                Assert.All(u.Mma.Keys, op => Assert.Equal($"mma.sync.aligned.{shape}.row.col.f32.{type}.{type}.f32", op));
            }
        }
    }

    /// <summary>With NVRTC present (CI unpacks Debian's), a real compile and a compile error that names file and line.</summary>
    [FactWhen(Requirement.NoNvrtc)]
    public void Without_nvrtc_compiling_is_an_error_naming_nvrtc()
    {
        var missing = Assert.Throws<CudaDreamException>(() => NvrtcApi.GetVersion());
        Assert.Contains("NVRTC", missing.Message);
    }

    [FactWhen(Requirement.Nvrtc)]
    public void Nvrtc_compiles_a_kernel_file_and_reports_errors_with_file_and_line()
    {
        using var cache = TestSupport.Fixtures.TempDir();
        var file = KernelSources.KernelFiles.First(f => f.Name == "softmax.cu");
        var compiled = KernelCompiler.Compile(file, "sm_80", cache.FullName);
        Assert.False(compiled.IsPtx);
        Assert.Equal(0x7f, compiled.Image[0]); // ELF
        Assert.Contains(compiled.Usage, u => u.Alias == "softmax_forward_f32" && u.Registers > 0 && u.SharedBytes == 128);
        Assert.True(KernelCompiler.Compile(file, "sm_80", cache.FullName).FromCache);

        var broken = file with { Name = "broken.cu", Text = file.Text.Replace("float m = -3.402823466e38f;", "float m = undeclared_name;") };
        var e = Assert.Throws<CudaDreamException>(() => KernelCompiler.Compile(broken, "sm_80", cache.FullName));
        Assert.Contains("kernels/broken.cu(", e.Message);
        Assert.Contains("undeclared_name", e.Message);
    }
}
