namespace CudaDream.Engine.Graph;

public static class Fuser
{
    public static int Run(ComputeGraph g) => 0;
}
