using CudaDream.TorchBench;

return TorchBenchProgram.Run(args, Console.Out, Console.Error);
