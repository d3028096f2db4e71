using CudaDream.TorchBench;
using var unet = ReferenceUNet.Load(args[0]);
var r = ReferenceCheck.VerifyForward(unet, Path.Combine(args[0], "refs/unet.safetensors"));
Console.WriteLine($"{r.MaxAbsError} {r.MaxAbsReference} {r.RelativeError} {r.Passed}");
