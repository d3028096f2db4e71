using CudaDream.Engine.Tensors;

namespace CudaDream.Diffusion.Images;

/// <summary>The value range of float pixels.</summary>
public enum PixelRange
{
    /// <summary>[−1, 1]: what the VAE encodes and decodes.</summary>
    MinusOneToOne,
    /// <summary>[0, 1]: diffusers' output_type="np".</summary>
    ZeroToOne,
}

/// <summary>Where the channel axis sits.</summary>
public enum PixelLayout
{
    /// <summary>[3, H, W] or [N, 3, H, W] (PyTorch, ONNX models).</summary>
    Chw,
    /// <summary>[H, W, 3] or [N, H, W, 3] (numpy images).</summary>
    Hwc,
}

/// <summary>Conversions between 8-bit images and float tensors, with diffusers' arithmetic.</summary>
public static class ImageTensors
{
    /// <summary>F32 [3, H, W] in [−1, 1]: b/255 (ToTensor) then (x − 0.5)/0.5 (Normalize), in float32.</summary>
    public static Tensor ToChw(RgbImage image)
    {
        int plane = image.Width * image.Height;
        var data = new float[3 * plane];
        for (int p = 0; p < plane; p++)
            for (int c = 0; c < 3; c++)
                data[c * plane + p] = (image.Rgb[3 * p + c] / 255f - 0.5f) / 0.5f;
        return Tensor.FromArray(data, 3, image.Height, image.Width);
    }

    /// <summary>Images of a [N, …] batch or a single [3, H, W] / [H, W, 3] tensor.</summary>
    public static RgbImage[] FromTensor(Tensor tensor, PixelRange range, PixelLayout layout)
    {
        var shape = tensor.Shape;
        int channelAxis = layout == PixelLayout.Chw ? shape.Length - 3 : shape.Length - 1;
        if (shape.Length is not (3 or 4) || shape[channelAxis] != 3 || (shape.Length == 4 && shape[0] <= 0))
            throw new ArgumentException($"expected an RGB image tensor {(layout == PixelLayout.Chw ? "[N,]3,H,W" : "[N,]H,W,3")}, got {Shapes.Format(shape)}");
        int n = shape.Length == 4 ? shape[0] : 1;
        int h = layout == PixelLayout.Chw ? shape[^2] : shape[^3];
        int w = layout == PixelLayout.Chw ? shape[^1] : shape[^2];
        var values = tensor.ToFloat32Array();
        int plane = h * w;
        var images = new RgbImage[n];
        for (int i = 0; i < n; i++)
        {
            var rgb = new byte[3 * plane];
            int offset = i * 3 * plane;
            for (int p = 0; p < plane; p++)
                for (int c = 0; c < 3; c++)
                    rgb[3 * p + c] = ToByte(values[offset + (layout == PixelLayout.Chw ? c * plane + p : 3 * p + c)], range);
            images[i] = new RgbImage(w, h, rgb);
        }
        return images;
    }

    /// <summary>diffusers: (x / 2 + 0.5).clamp(0, 1) for [−1, 1], then (v · 255).round() (half to even), in float32.</summary>
    public static byte ToByte(float value, PixelRange range)
    {
        float v = range == PixelRange.MinusOneToOne ? value / 2f + 0.5f : value;
        if (float.IsNaN(v)) return 0;
        v = Math.Clamp(v, 0f, 1f);
        return (byte)MathF.Round(v * 255f, MidpointRounding.ToEven);
    }
}
