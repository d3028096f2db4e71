using ArchUnitNET.Domain;
using ArchUnitNET.Fluent;
using ArchUnitNET.Loader;
using ArchUnitNET.xUnit;
using Xunit;
using static ArchUnitNET.Fluent.ArchRuleDefinition;

namespace CudaDream.Cli.Tests.Architecture;

/// <summary>
/// The layers of DESIGN.md, checked over the compiled assemblies (every type reference in signatures and method
/// bodies, as Mono.Cecil reads them): each layer knows nothing of the layers above it, and the backends are
/// siblings. A break fails the build's test run; <see cref="A_planted_violation_is_caught"/> shows the rules bite.
/// </summary>
public class ArchitectureTests
{
    private static readonly System.Reflection.Assembly Engine = typeof(Engine.CudaDreamException).Assembly;
    private static readonly System.Reflection.Assembly Diffusion = typeof(Diffusion.Training.DreamBoothTrainer).Assembly;
    private static readonly System.Reflection.Assembly Cli = typeof(Program).Assembly;

    private static readonly Lazy<ArchUnitNET.Domain.Architecture> Product = new(() => new ArchLoader().LoadAssemblies(Engine, Diffusion, Cli).Build());

    /// <summary>Each rule: its name (for the failure message) and the rule itself.</summary>
    public static TheoryData<string> RuleNames() => new(Rules.Keys);

    [Theory, MemberData(nameof(RuleNames))]
    public void The_layers_hold(string rule) => Rules[rule].Check(Product.Value);

    private static IObjectProvider<IType> In(params string[] namespaces)
    {
        var provider = Types().That().ResideInNamespaceOrBelow(namespaces[0]);
        foreach (var ns in namespaces.Skip(1)) provider = provider.Or().ResideInNamespaceOrBelow(ns);
        return provider.As(string.Join(", ", namespaces));
    }

    /// <summary>The engine's façade: the root namespace's types other than the error types every layer throws.</summary>
    private static IObjectProvider<IType> Facade() =>
        Types().That().ResideInNamespace("CudaDream.Engine").And().AreNotAssignableTo(typeof(Exception)).As("the engine façade (CudaDream.Engine.*)");

    private static IArchRule Forbid(IObjectProvider<IType> layer, params IObjectProvider<IType>[] above)
    {
        var rule = Types().That().Are(layer).Should().NotDependOnAny(above[0]);
        foreach (var a in above.Skip(1)) rule = rule.AndShould().NotDependOnAny(a);
        return rule;
    }

    private const string Formats = "CudaDream.Engine.Formats", Tensors = "CudaDream.Engine.Tensors", Randomness = "CudaDream.Engine.Randomness",
        Graph = "CudaDream.Engine.Graph", Autodiff = "CudaDream.Engine.Autodiff", Backends = "CudaDream.Engine.Backends",
        Cpu = "CudaDream.Engine.Backends.Cpu", Device = "CudaDream.Engine.Backends.Device", Cuda = "CudaDream.Engine.Backends.Cuda",
        Emu = "CudaDream.Engine.Backends.Emu", Ops = "CudaDream.Engine.Ops", Training = "CudaDream.Engine.Training",
        DiffusionNs = "CudaDream.Diffusion", CliNs = "CudaDream.Cli";

    internal static readonly Dictionary<string, IArchRule> Rules = new()
    {
        ["Engine knows no Diffusion and no Cli"] = Forbid(In("CudaDream.Engine"), In(DiffusionNs), In(CliNs)),
        ["Diffusion knows no Cli"] = Forbid(In(DiffusionNs), In(CliNs)),
        ["Tensors and Randomness know only each other"] = Forbid(In(Tensors, Randomness), In(Formats, Graph, Autodiff, Backends, Ops, Training), Facade()),
        ["Formats know no graph, backend, op or training"] = Forbid(In(Formats), In(Graph, Autodiff, Backends, Ops, Training), Facade()),
        ["Graph and Autodiff know no backend, op or training"] = Forbid(In(Graph, Autodiff), In(Backends, Ops, Training), Facade()),
        ["Backends know no op, training or façade"] = Forbid(In(Backends), In(Ops, Training, Autodiff), Facade()),
        ["Cpu knows no other backend"] = Forbid(In(Cpu), In(Device, Cuda, Emu)),
        ["Device executor knows no concrete backend"] = Forbid(In(Device), In(Cpu, Cuda, Emu)),
        ["Cuda knows no other backend"] = Forbid(In(Cuda), In(Cpu, Device, Emu)),
        ["Emu knows no other backend"] = Forbid(In(Emu), In(Cpu, Device, Cuda)),
        ["Ops reach devices only through the device interface"] = Forbid(In(Ops), In(Cuda, Emu, Training), Facade()),
    };

    /// <summary>
    /// The test of the test: <see cref="Engine.Graph.PlantedViolation"/> (in this test assembly) is a type of the graph
    /// layer that uses the CPU backend; the graph rule must reject it and name it.
    /// </summary>
    [Fact]
    public void A_planted_violation_is_caught()
    {
        var planted = new ArchLoader().LoadAssemblies(Engine, typeof(ArchitectureTests).Assembly).Build();
        var e = Assert.ThrowsAny<Exception>(() => Rules["Graph and Autodiff know no backend, op or training"].Check(planted));
        Assert.Contains("PlantedViolation", e.Message);
        Assert.Contains("CpuContext", e.Message);
    }
}
