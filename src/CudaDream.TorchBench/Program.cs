using CudaDream.TorchBench;
using var unet = ReferenceUNet.Load(args[0]);
var r = ReferenceCheck.VerifyForward(unet, Path.Combine(args[0], "refs/unet.safetensors"));
Console.WriteLine($"{r.MaxAbsError} {r.MaxAbsReference} {r.RelativeError} {r.Passed}");
var g = LoraStep.CheckGradients(args[0], Path.Combine(args[0], "refs/unet_lora_grad.safetensors"));
Console.WriteLine($"loss {g.Loss} ref {g.ReferenceLoss} n={g.Gradients.Count}");
foreach (var c in g.Gradients.OrderByDescending(c => c.RelativeError).Take(5)) Console.WriteLine($"{c.Name} {c.MaxAbsError:E2} {c.MaxAbsReference:E2} {c.RelativeError:E2}");
foreach (var c in g.Gradients.OrderBy(c => c.MaxAbsReference).Take(3)) Console.WriteLine($"small: {c.Name} {c.MaxAbsError:E2} {c.MaxAbsReference:E2} {c.RelativeError:E2}");
