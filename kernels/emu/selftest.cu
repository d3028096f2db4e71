// Planted bugs the emulator must catch (tests/CudaDream.Engine.Tests/Emu/EmuAdversarialTests).
// Built into the emulator libraries only; NVRTC never sees this file.
#include "../device.cuh"

// Each thread writes its value to shared memory and reads its neighbour's. `synchronized` = 0
// plants the race: no barrier between the write and the read.
__global__ void selftest_neighbour(const float* x, float* y, int n, int synchronized)
{
    CD_SHARED(float, s, 1024);
    const int i = threadIdx.x;
    s[i] = x[i];
    if (synchronized) __syncthreads();
    y[i] = s[(i + 1) % n];
}

// Writes one element past the end of y (n elements) when `overrun` is set.
__global__ void selftest_write(float* y, int n, int overrun)
{
    const int i = (int)global_thread_index();
    if (i < n + overrun) y[i] = 1.0f;
}

// Writes one element before the start of y when `underrun` is set.
__global__ void selftest_write_before(float* y, int n, int underrun)
{
    const int i = (int)global_thread_index() - underrun;
    if (i < n) y[i] = 2.0f;
}

// Thread 0 leaves early while the others wait at the barrier.
__global__ void selftest_barrier_divergence(float* y)
{
    if (threadIdx.x == 0) return;
    __syncthreads();
    y[threadIdx.x] = 1.0f;
}

// Reads the shared destination of a cp.async before (waited = 0) or after waiting for it.
__global__ void selftest_async_copy(const float* x, float* y, int waited)
{
    CD_SHARED(float, s, 256);
    cp_async<4>(&s[threadIdx.x], &x[threadIdx.x]);
    cp_async_commit();
    if (waited) cp_async_wait<0>();
    y[threadIdx.x] = s[threadIdx.x];
    if (!waited) cp_async_wait<0>();
}

CD_EXPORT(selftest_neighbour, selftest_neighbour)
CD_EXPORT(selftest_write, selftest_write)
CD_EXPORT(selftest_write_before, selftest_write_before)
CD_EXPORT(selftest_barrier_divergence, selftest_barrier_divergence)
CD_EXPORT(selftest_async_copy, selftest_async_copy)
