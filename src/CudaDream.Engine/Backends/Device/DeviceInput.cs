namespace CudaDream.Engine.Backends.Device;

/// <summary>Where the bytes of an input of <see cref="DeviceExecutor.Enqueue"/> come from; both are stream-ordered and capturable.</summary>
public abstract record DeviceInput
{
    internal abstract void CopyTo(IKernelDevice device, DevicePtr destination, long bytes);

    /// <summary>Bytes staged in pinned host memory, read when the copy runs (at every replay of a captured graph).</summary>
    public sealed record Staged(HostBuffer Buffer, long Offset) : DeviceInput
    {
        internal override void CopyTo(IKernelDevice device, DevicePtr destination, long bytes) => device.CopyToDeviceAsync(destination, Buffer, Offset, bytes);
    }

    /// <summary>Bytes already on the device (another executor's output, an optimizer's state).</summary>
    public sealed record OnDevice(DevicePtr Source) : DeviceInput
    {
        internal override void CopyTo(IKernelDevice device, DevicePtr destination, long bytes)
        {
            if (destination != Source) device.CopyDeviceToDevice(destination, Source, bytes);
        }
    }
}
