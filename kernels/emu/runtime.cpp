// Runtime of the CUDA emulator: fibers, the adversarial block scheduler, warp collectives,
// tensor-core fragments, async copies, guarded allocations and the cuBLAS-semantics GEMM.
// See emu.h for what is emulated and why.
#include "emu.h"

#include <algorithm>
#include <csetjmp>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>
#include <sys/mman.h>
#include <unistd.h>

#define EMU_API extern "C" __attribute__((visibility("default")))

// ---------------------------------------------------------------- context switch (no syscalls)
// void emu_switch(void** save_sp, void* load_sp): saves the callee-saved registers and the FP
// control words on the current stack, stores the stack pointer, loads the other one and returns
// into whatever that stack was switched out from.
#if defined(__x86_64__)
__asm__(".text\n"
        ".globl emu_switch\n.hidden emu_switch\n.type emu_switch,@function\n"
        "emu_switch:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  subq $8, %rsp\n  stmxcsr (%rsp)\n  fnstcw 4(%rsp)\n"
        "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
        "  ldmxcsr (%rsp)\n  fldcw 4(%rsp)\n  addq $8, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size emu_switch, .-emu_switch\n"
        // First entry of a fiber: r12 = argument, r13 = function; the stack is 16-byte aligned here.
        ".globl emu_fiber_start\n.hidden emu_fiber_start\n.type emu_fiber_start,@function\n"
        "emu_fiber_start:\n  movq %r12, %rdi\n  callq *%r13\n  ud2\n"
        ".size emu_fiber_start, .-emu_fiber_start\n");
#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl emu_switch\n.hidden emu_switch\n.type emu_switch,%function\n"
        "emu_switch:\n"
        "  sub sp, sp, #176\n"
        "  stp x19, x20, [sp, #0]\n  stp x21, x22, [sp, #16]\n  stp x23, x24, [sp, #32]\n"
        "  stp x25, x26, [sp, #48]\n  stp x27, x28, [sp, #64]\n  stp x29, x30, [sp, #80]\n"
        "  stp d8, d9, [sp, #96]\n  stp d10, d11, [sp, #112]\n  stp d12, d13, [sp, #128]\n  stp d14, d15, [sp, #144]\n"
        "  mrs x9, fpcr\n  str x9, [sp, #160]\n"
        "  mov x9, sp\n  str x9, [x0]\n  mov sp, x1\n"
        "  ldr x9, [sp, #160]\n  msr fpcr, x9\n"
        "  ldp x19, x20, [sp, #0]\n  ldp x21, x22, [sp, #16]\n  ldp x23, x24, [sp, #32]\n"
        "  ldp x25, x26, [sp, #48]\n  ldp x27, x28, [sp, #64]\n  ldp x29, x30, [sp, #80]\n"
        "  ldp d8, d9, [sp, #96]\n  ldp d10, d11, [sp, #112]\n  ldp d12, d13, [sp, #128]\n  ldp d14, d15, [sp, #144]\n"
        "  add sp, sp, #176\n  ret\n"
        ".size emu_switch, .-emu_switch\n"
        ".globl emu_fiber_start\n.hidden emu_fiber_start\n.type emu_fiber_start,%function\n"
        "emu_fiber_start:\n  mov x0, x19\n  blr x20\n  brk #0\n"
        ".size emu_fiber_start, .-emu_fiber_start\n");
#else
#error "the emulator's context switch exists for x86-64 and aarch64"
#endif
extern "C" void emu_switch(void** save_sp, void* load_sp);
extern "C" void emu_fiber_start();

namespace emu {

thread_local Fiber* current __attribute__((tls_model("initial-exec"))) = nullptr;

enum State { RUNNABLE, AT_BARRIER, AT_WARP, DONE };

struct AsyncCopy { void* dst; const void* src; int bytes; int group; };

struct Fiber
{
    ThreadCoords c; // first member: coords() reads it through `current`
    void* sp = nullptr;
    Block* block = nullptr;
    int linear = 0, lane = 0, warp = 0;
    State state = RUNNABLE;
    size_t static_cursor = 0;
    std::vector<AsyncCopy> copies;
    int committed_groups = 0;
    u8* stack = nullptr;
};

struct WarpState
{
    u32 arrived = 0, mask = 0, done_lanes = 0, existing = 0;
    size_t bytes = 0;
    unsigned generation = 0;
    alignas(16) u8 data[2][32][64];
};

static const size_t kStackBytes = 128 * 1024;
static const size_t kStaticSharedBytes = 48 * 1024;
static const u32 kSharedLimitBytes = 48 * 1024; // without cuFuncSetAttribute opt-in

struct Rng
{
    u64 s;
    u64 next() { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }
    u32 below(u32 n) { return (u32)(((next() >> 32) * (u64)n) >> 32); } // Lemire's multiply-shift, no division
};

struct Block
{
    std::vector<Fiber> fibers;
    std::vector<int> order;
    std::vector<WarpState> warps;
    int alive = 0, at_barrier = 0;
    // A scheduling pass visits order[(pass_start + k) % n]: barriers reshuffle `order`, warp
    // collectives only move the start (O(1) instead of a reshuffle of the whole block).
    u32 pass_start = 0;
    bool restart_pass = false, failed = false, shuffle = true;
    void* scheduler_sp = nullptr; // the scheduler's stack while a fiber of this block runs
    u8* static_smem = nullptr;
    size_t static_filled = 0;     // static shared bytes already filled with garbage in this block
    u8* dynamic_smem = nullptr;
    size_t dynamic_bytes = 0;
    void (*thread_main)(void*) = nullptr;
    void* ctx = nullptr;
    Rng rng{1};
};

// Per OS thread: fiber stacks, shared-memory arenas, the fault jump and the last error.
struct ThreadResources
{
    std::vector<u8*> stacks;
    u8* shared_region = nullptr; // static arena | guard | dynamic arena | guard
    sigjmp_buf fault_jump;
    bool in_launch = false;
    Block* block = nullptr;
    std::string error;
    const char* kernel = "";
};
static thread_local ThreadResources tr;

static size_t page_size() { static size_t p = (size_t)sysconf(_SC_PAGESIZE); return p; }

static u8* map_with_guard_below(size_t bytes)
{
    size_t ps = page_size();
    void* m = mmap(nullptr, bytes + ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    mprotect(m, ps, PROT_NONE);
    return static_cast<u8*>(m) + ps;
}

void set_error(const char* fmt, va_list ap)
{
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    const Fiber* f = current;
    char where[256] = "";
    if (f)
        snprintf(where, sizeof where, " (thread %u,%u,%u of block %u,%u,%u)", f->c.thread.x, f->c.thread.y, f->c.thread.z,
                 f->c.block.x, f->c.block.y, f->c.block.z);
    tr.error = std::string("kernel ") + tr.kernel + ": " + buf + where;
}

[[noreturn]] static void back_to_scheduler_failed()
{
    Fiber* f = current;
    f->block->failed = true;
    f->state = DONE;
    emu_switch(&f->sp, f->block->scheduler_sp);
    __builtin_unreachable();
}

void fail(const char* fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_error(fmt, ap);
    va_end(ap);
    if (!current) std::abort();
    back_to_scheduler_failed();
}

static void yield_to_scheduler()
{
    Fiber* f = current;
    emu_switch(&f->sp, f->block->scheduler_sp);
}

static void fill_garbage(u8* p, size_t n, Rng& rng);

void* static_shared_bytes(size_t bytes, size_t align)
{
    Fiber* f = current;
    Block& b = *f->block;
    size_t at = (f->static_cursor + align - 1) & ~(align - 1);
    if (at + bytes > kStaticSharedBytes) fail("static shared memory exceeds %zu bytes", kStaticSharedBytes);
    f->static_cursor = at + bytes;
    // Garbage where the block first declares shared memory: filling all 48 KiB per block cost more
    // than most kernels.
    if (at + bytes > b.static_filled)
    {
        fill_garbage(b.static_smem + b.static_filled, at + bytes - b.static_filled, b.rng);
        b.static_filled = at + bytes;
    }
    return b.static_smem + at;
}

void* dynamic_shared() { return current->block->dynamic_smem; }

static void shuffle_order(Block& b)
{
    if (!b.shuffle) return;
    for (size_t i = b.order.size(); i > 1; i--) std::swap(b.order[i - 1], b.order[b.rng.below((u32)i)]);
}

void syncthreads()
{
    Fiber* f = current;
    Block& b = *f->block;
    f->state = AT_BARRIER;
    if (++b.at_barrier == b.alive)
    {
        for (auto& g : b.fibers) if (g.state == AT_BARRIER) g.state = RUNNABLE;
        b.at_barrier = 0;
        shuffle_order(b);
        b.restart_pass = true;
    }
    yield_to_scheduler();
}

// Moves the start of the next scheduling pass: the order in which the released lanes and everybody
// else resume changes at every collective without reshuffling the block.
static void rotate_order(Block& b)
{
    if (b.shuffle) b.pass_start = b.rng.below((u32)b.order.size());
}

const u8* warp_exchange(u32 mask, const void* mine, size_t bytes)
{
    Fiber* f = current;
    Block& b = *f->block;
    WarpState& w = b.warps[f->warp];
    if (bytes > 64) fail("warp exchange of %zu bytes", bytes);
    if (!((mask >> f->lane) & 1u)) fail("warp collective with mask %08x called by lane %d outside it", mask, f->lane);
    if (mask & ~w.existing) fail("warp collective mask %08x names lanes that do not exist (warp has %08x)", mask, w.existing);
    if (mask & w.done_lanes) fail("warp collective mask %08x names lanes that already exited (%08x)", mask, w.done_lanes & mask);
    if (w.arrived == 0) { w.mask = mask; w.bytes = bytes; }
    else if (w.mask != mask || w.bytes != bytes)
        fail("lanes of warp %d disagree on a collective: mask %08x/%zu bytes vs %08x/%zu bytes", f->warp, mask, bytes, w.mask, w.bytes);
    unsigned gen = w.generation;
    u8* slot = w.data[gen & 1][f->lane];
    if (bytes == 4) std::memcpy(slot, mine, 4);
    else if (bytes == 8) std::memcpy(slot, mine, 8);
    else std::memcpy(slot, mine, bytes);
    w.arrived |= 1u << f->lane;
    if (w.arrived == w.mask)
    {
        w.arrived = 0;
        w.generation++;
        for (int l = 0; l < 32; l++)
            if ((mask >> l) & 1u)
            {
                Fiber& g = b.fibers[f->warp * 32 + l];
                if (g.state == AT_WARP) g.state = RUNNABLE;
            }
        rotate_order(b);
        b.restart_pass = true;
        yield_to_scheduler();
    }
    else
    {
        f->state = AT_WARP;
        yield_to_scheduler();
    }
    return &w.data[gen & 1][0][0];
}

void syncwarp(u32 mask)
{
    int dummy = 0;
    warp_exchange(mask, &dummy, sizeof dummy);
}

void async_copy(void* dst, const void* src, int bytes)
{
    if (((uintptr_t)dst | (uintptr_t)src) & (uintptr_t)(bytes - 1)) fail("cp.async of %d bytes from %p to %p is misaligned", bytes, src, dst);
    current->copies.push_back({dst, src, bytes, -1});
}

void async_commit()
{
    Fiber* f = current;
    for (auto& c : f->copies) if (c.group < 0) c.group = f->committed_groups;
    f->committed_groups++;
}

void async_wait(int pending)
{
    // Complete every committed group except the `pending` most recent ones; uncommitted copies
    // stay in flight, as cp.async.wait_group specifies.
    Fiber* f = current;
    int limit = f->committed_groups - pending;
    std::vector<AsyncCopy> keep;
    for (auto& c : f->copies)
    {
        if (c.group >= 0 && c.group < limit) std::memcpy(c.dst, c.src, (size_t)c.bytes);
        else keep.push_back(c);
    }
    f->copies.swap(keep);
}

float f16_bits_to_float(u16 h)
{
    u32 sign = (u32)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return __uint_as_float(sign | 0x7f800000u | (man << 13));
    if (exp == 0) { float v = (float)man * 5.9604644775390625e-8f; return sign ? -v : v; }
    return __uint_as_float(sign | ((exp + 112) << 23) | (man << 13));
}
float bf16_bits_to_float(u16 h) { return __uint_as_float((u32)h << 16); }

void mma_m16n8k8(int elem, float d[4], const u32* a, int na, const u32* b, int nb, const float c[4])
{
    struct Frag { u32 a[4]; u32 b[2]; float c[4]; } mine{}, all[32];
    static_assert(sizeof(Frag) <= kExchangeStride, "fragment larger than an exchange slot");
    std::memcpy(mine.a, a, sizeof(u32) * na);
    std::memcpy(mine.b, b, sizeof(u32) * nb);
    std::memcpy(mine.c, c, sizeof(float) * 4);
    const u8* view = warp_exchange(0xffffffffu, &mine, sizeof mine);
    for (int l = 0; l < 32; l++) std::memcpy(&all[l], view + l * kExchangeStride, sizeof(Frag));
    float A[16][8], B[8][8];
    for (int l = 0; l < 32; l++)
    {
        int g = l >> 2, t = l & 3;
        const Frag& fr = all[l];
        if (elem == 2)
        {   // tf32 keeps 10 mantissa bits: the low 13 bits of each operand are ignored
            auto tf = [](u32 u) { return __uint_as_float(u & 0xffffe000u); };
            A[g][t] = tf(fr.a[0]); A[g + 8][t] = tf(fr.a[1]); A[g][t + 4] = tf(fr.a[2]); A[g + 8][t + 4] = tf(fr.a[3]);
            B[t][g] = tf(fr.b[0]); B[t + 4][g] = tf(fr.b[1]);
        }
        else
        {
            auto cv = [elem](u16 h) { return elem == 0 ? f16_bits_to_float(h) : bf16_bits_to_float(h); };
            for (int r = 0; r < 2; r++)
            {
                A[g + 8 * r][2 * t] = cv((u16)(fr.a[r] & 0xffff));
                A[g + 8 * r][2 * t + 1] = cv((u16)(fr.a[r] >> 16));
            }
            B[2 * t][g] = cv((u16)(fr.b[0] & 0xffff));
            B[2 * t + 1][g] = cv((u16)(fr.b[0] >> 16));
        }
    }
    int lane = current->lane, g = lane >> 2, t = lane & 3;
    for (int r = 0; r < 4; r++)
    {
        int row = g + 8 * (r >> 1), col = 2 * t + (r & 1);
        float acc = all[lane].c[r];
        for (int k = 0; k < 8; k++) acc = fmaf(A[row][k], B[k][col], acc);
        d[r] = acc;
    }
}

static float fragment_half(int elem, u32 reg, int high)
{
    const u16 h = (u16)(high ? reg >> 16 : reg & 0xffff);
    return elem == 0 ? f16_bits_to_float(h) : bf16_bits_to_float(h);
}

void mma_m16n8k16(int elem, float d[4], const u32 a[4], const u32 b[2], const float c[4])
{
    struct Frag { u32 a[4]; u32 b[2]; } mine;
    static_assert(sizeof(Frag) <= kExchangeStride, "fragment larger than an exchange slot");
    std::memcpy(mine.a, a, sizeof mine.a);
    std::memcpy(mine.b, b, sizeof mine.b);
    const u8* view = warp_exchange(0xffffffffu, &mine, sizeof mine);
    auto frag = [view](int l) -> const Frag& { return *reinterpret_cast<const Frag*>(view + l * kExchangeStride); };
    // This lane's outputs need rows g and g+8 of A and columns 2t, 2t+1 of B, gathered from the lanes that hold them:
    // row g (and g+8) of A sits in lanes 4g..4g+3 (a0/a2, and a1/a3), column n of B in lanes 4n..4n+3.
    const int lane = current->lane, g = lane >> 2, t = lane & 3;
    float A[2][16], B[2][16];
    for (int holder = 0; holder < 4; holder++)
    {
        const Frag& fa = frag(4 * g + holder);
        for (int half = 0; half < 2; half++)
        {
            A[0][2 * holder + half] = fragment_half(elem, fa.a[0], half);
            A[1][2 * holder + half] = fragment_half(elem, fa.a[1], half);
            A[0][8 + 2 * holder + half] = fragment_half(elem, fa.a[2], half);
            A[1][8 + 2 * holder + half] = fragment_half(elem, fa.a[3], half);
        }
        for (int col = 0; col < 2; col++)
        {
            const Frag& fb = frag(4 * (2 * t + col) + holder);
            for (int half = 0; half < 2; half++)
            {
                B[col][2 * holder + half] = fragment_half(elem, fb.b[0], half);
                B[col][8 + 2 * holder + half] = fragment_half(elem, fb.b[1], half);
            }
        }
    }
    for (int r = 0; r < 4; r++)
    {
        float acc = c[r];
        for (int k = 0; k < 16; k++) acc = fmaf(A[r >> 1][k], B[r & 1][k], acc);
        d[r] = acc;
    }
}

static bool in_block_shared(const void* p, size_t n)
{
    const Block& b = *current->block;
    const u8* q = static_cast<const u8*>(p);
    return (q >= b.static_smem && q + n <= b.static_smem + kStaticSharedBytes) ||
           (q >= b.dynamic_smem && q + n <= b.dynamic_smem + b.dynamic_bytes);
}

void ldmatrix(int count, bool trans, u32* r, const void* row)
{
    struct Row { u16 e[8]; } mine{};
    const int lane = current->lane;
    if (lane < 8 * count)
    {   // this lane supplies row (lane & 7) of matrix (lane >> 3)
        if ((uintptr_t)row & 15) fail("ldmatrix row address %p (lane %d) is not 16-byte aligned", row, lane);
        if (!in_block_shared(row, 16)) fail("ldmatrix row address %p (lane %d) is not in the block's shared memory", row, lane);
        std::memcpy(mine.e, row, 16);
    }
    const u8* view = warp_exchange(0xffffffffu, &mine, sizeof mine);
    auto at = [view](int matrix, int row_in_matrix) -> const Row& { return *reinterpret_cast<const Row*>(view + (8 * matrix + row_in_matrix) * kExchangeStride); };
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < count; i++)
    {
        u32 lo, hi;
        if (!trans) { lo = at(i, g).e[2 * t]; hi = at(i, g).e[2 * t + 1]; }
        else { lo = at(i, 2 * t).e[g]; hi = at(i, 2 * t + 1).e[g]; }
        r[i] = lo | (hi << 16);
    }
}

// ------------------------------------------------------------------------------- scheduling
static void fiber_entry(Fiber* f)
{
    Block& b = *f->block;
    b.thread_main(b.ctx);
    if (!f->copies.empty()) fail("thread exits with %zu cp.async copies never waited for", f->copies.size());
    f->state = DONE;
    b.alive--;
    b.warps[f->warp].done_lanes |= 1u << f->lane;
    if (b.at_barrier > 0)
        fail("thread exits while %d threads of its block wait at __syncthreads (barrier divergence)", b.at_barrier);
    WarpState& w = b.warps[f->warp];
    if (w.arrived && ((w.mask >> f->lane) & 1u))
        fail("thread exits while lanes %08x of its warp wait for it in a collective", w.arrived);
    emu_switch(&f->sp, b.scheduler_sp);
    __builtin_unreachable();
}

static void prepare_stack(Fiber& f)
{
    // Layout matches emu_switch's pops: FP control words, r15, r14, r13, r12, rbx, rbp, return address.
    u8* top = f.stack + kStackBytes;
#if defined(__x86_64__)
    u64* ret = reinterpret_cast<u64*>(top - 24);
    ret[0] = (u64)(uintptr_t)&emu_fiber_start;
    u64* regs = ret - 6; // r15 r14 r13 r12 rbx rbp (lowest first)
    regs[0] = 0; regs[1] = 0; regs[2] = (u64)(uintptr_t)&fiber_entry; regs[3] = (u64)(uintptr_t)&f; regs[4] = 0; regs[5] = 0;
    u32* csr = reinterpret_cast<u32*>(regs - 1);
    u32 mxcsr; u16 fpucw;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    __asm__ volatile("fnstcw %0" : "=m"(fpucw));
    csr[0] = mxcsr; csr[1] = fpucw;
    f.sp = regs - 1;
#else
    u64* frame = reinterpret_cast<u64*>(top - 176 - 16);
    std::memset(frame, 0, 176);
    frame[0] = (u64)(uintptr_t)&f;            // x19 -> argument
    frame[1] = (u64)(uintptr_t)&fiber_entry;  // x20 -> function
    frame[11] = (u64)(uintptr_t)&emu_fiber_start; // x30 (link register) -> entry
    u64 fpcr; __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    frame[20] = fpcr;
    f.sp = frame;
#endif
}

static void fill_garbage(u8* p, size_t n, Rng& rng)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { u64 v = rng.next(); std::memcpy(p + i, &v, 8); }
    for (; i < n; i++) p[i] = (u8)rng.next();
}

static bool ensure_resources(int threads)
{
    while ((int)tr.stacks.size() < threads)
    {
        u8* s = map_with_guard_below(kStackBytes);
        if (!s) return false;
        tr.stacks.push_back(s);
    }
    if (!tr.shared_region)
    {
        // static arena, guard page, dynamic arena (placed so its end touches the next guard page)
        size_t ps = page_size(), arena = (kSharedLimitBytes + ps - 1) / ps * ps;
        u8* m = static_cast<u8*>(mmap(nullptr, 2 * arena + 2 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
        if (m == MAP_FAILED) return false;
        mprotect(m + arena, ps, PROT_NONE);
        mprotect(m + 2 * arena + ps, ps, PROT_NONE);
        tr.shared_region = m;
    }
    return true;
}

static int run_block(Block& b, const LaunchConfig& cfg, u32 bx, u32 by, u32 bz)
{
    const u32 nthreads = cfg.block[0] * cfg.block[1] * cfg.block[2];
    size_t ps = page_size(), arena = (kSharedLimitBytes + ps - 1) / ps * ps;
    b.static_smem = tr.shared_region;
    u32 dyn = (cfg.dynamic_shared_bytes + 15) & ~15u;
    b.dynamic_smem = tr.shared_region + arena + ps + (arena - dyn);
    b.dynamic_bytes = dyn;
    b.static_filled = 0; // filled on first declaration (static_shared_bytes)
    fill_garbage(b.dynamic_smem, dyn, b.rng);
    b.alive = (int)nthreads;
    b.at_barrier = 0;
    b.failed = false;
    for (auto& w : b.warps) { w.arrived = 0; w.done_lanes = 0; w.generation = 0; }
    for (u32 i = 0; i < nthreads; i++)
    {
        Fiber& f = b.fibers[i];
        f.c.thread = {i % cfg.block[0], (i / cfg.block[0]) % cfg.block[1], i / (cfg.block[0] * cfg.block[1])};
        f.c.block = {bx, by, bz};
        f.state = RUNNABLE;
        f.static_cursor = 0;
        f.copies.clear();
        f.committed_groups = 0;
        prepare_stack(f);
    }
    shuffle_order(b);
    b.pass_start = 0;
    const size_t n = b.order.size();
    while (b.alive > 0)
    {
        bool ran = false;
        b.restart_pass = false;
        for (size_t k = 0, at = b.pass_start; k < n && !b.restart_pass; k++, at = at + 1 == n ? 0 : at + 1)
        {
            Fiber& f = b.fibers[b.order[at]];
            if (f.state != RUNNABLE) continue;
            ran = true;
            current = &f;
            emu_switch(&b.scheduler_sp, f.sp);
            current = nullptr;
            if (b.failed) return 1;
        }
        if (!ran && !b.restart_pass)
        {
            int waiting_warp = 0;
            for (auto& f : b.fibers) if (f.state == AT_WARP) waiting_warp++;
            char buf[256];
            snprintf(buf, sizeof buf, "kernel %s: deadlock in block %u,%u,%u: %d threads at __syncthreads, %d in warp collectives, %d alive",
                     tr.kernel, bx, by, bz, b.at_barrier, waiting_warp, b.alive);
            tr.error = buf;
            return 1;
        }
    }
    return 0;
}

static u64 gcd(u64 a, u64 b) { while (b) { u64 t = a % b; a = b; b = t; } return a; }

static std::mutex alloc_mutex;
struct Allocation { u8* map_base; size_t map_bytes; u8* user; size_t bytes; int guard; };
static std::map<uintptr_t, Allocation> allocations; // keyed by user pointer

static void describe_fault(uintptr_t addr, char* out, size_t n)
{
    snprintf(out, n, "invalid memory access at address 0x%lx (not inside any allocation)", (unsigned long)addr);
    std::unique_lock<std::mutex> lock(alloc_mutex, std::try_to_lock);
    if (!lock.owns_lock()) return;
    for (auto& kv : allocations)
    {
        const Allocation& a = kv.second;
        uintptr_t ub = (uintptr_t)a.user, ue = ub + a.bytes;
        if (addr >= ue && addr < (uintptr_t)a.map_base + a.map_bytes)
        { snprintf(out, n, "out-of-bounds access at address 0x%lx: %lu bytes past the end of a %zu-byte allocation", (unsigned long)addr, (unsigned long)(addr - ue), a.bytes); return; }
        if (addr < ub && addr >= (uintptr_t)a.map_base)
        { snprintf(out, n, "out-of-bounds access at address 0x%lx: %lu bytes before the start of a %zu-byte allocation", (unsigned long)addr, (unsigned long)(ub - addr), a.bytes); return; }
    }
    uintptr_t sh = (uintptr_t)tr.shared_region;
    if (sh && addr >= sh && addr < sh + 2 * (kSharedLimitBytes + page_size()) + 2 * page_size())
        snprintf(out, n, "out-of-bounds shared-memory access at address 0x%lx", (unsigned long)addr);
}

static struct sigaction previous_segv, previous_bus;

static void on_fault(int sig, siginfo_t* info, void* uctx)
{
    if (tr.in_launch)
    {
        char buf[512];
        describe_fault((uintptr_t)info->si_addr, buf, sizeof buf);
        const Fiber* f = current;
        char where[160] = "";
        if (f) snprintf(where, sizeof where, " (thread %u,%u,%u of block %u,%u,%u)", f->c.thread.x, f->c.thread.y, f->c.thread.z, f->c.block.x, f->c.block.y, f->c.block.z);
        tr.error = std::string("kernel ") + tr.kernel + ": " + buf + where;
        siglongjmp(tr.fault_jump, 1);
    }
    // not ours: hand the signal to whoever had it before (the .NET runtime, usually)
    struct sigaction& prev = sig == SIGSEGV ? previous_segv : previous_bus;
    if (prev.sa_flags & SA_SIGINFO) { prev.sa_sigaction(sig, info, uctx); return; }
    if (prev.sa_handler == SIG_IGN) return;
    if (prev.sa_handler == SIG_DFL) { signal(sig, SIG_DFL); raise(sig); return; }
    prev.sa_handler(sig);
}

static void install_fault_handler()
{
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa{};
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &previous_segv);
        sigaction(SIGBUS, &sa, &previous_bus);
    });
}

int run_grid(const char* name, const LaunchConfig* cfg, void (*thread_main)(void*), void* ctx)
{
    tr.kernel = name;
    tr.error.clear();
    const u64 nthreads = (u64)cfg->block[0] * cfg->block[1] * cfg->block[2];
    const u64 nblocks = (u64)cfg->grid[0] * cfg->grid[1] * cfg->grid[2];
    char buf[256];
    if (nthreads == 0 || nthreads > 1024 || cfg->block[2] > 64)
    { snprintf(buf, sizeof buf, "kernel %s: invalid block %ux%ux%u", name, cfg->block[0], cfg->block[1], cfg->block[2]); tr.error = buf; return 1; }
    if (nblocks == 0 || cfg->grid[1] > 65535 || cfg->grid[2] > 65535 || cfg->grid[0] > 0x7fffffffu)
    { snprintf(buf, sizeof buf, "kernel %s: invalid grid %ux%ux%u", name, cfg->grid[0], cfg->grid[1], cfg->grid[2]); tr.error = buf; return 1; }
    if (cfg->dynamic_shared_bytes > kSharedLimitBytes)
    { snprintf(buf, sizeof buf, "kernel %s: %u bytes of dynamic shared memory exceed the %u-byte default limit", name, cfg->dynamic_shared_bytes, kSharedLimitBytes); tr.error = buf; return 1; }
    if (tr.in_launch) { tr.error = "emulator launch re-entered"; return 1; }
    if (!ensure_resources((int)nthreads)) { tr.error = "emulator: out of memory for fiber stacks"; return 1; }
    install_fault_handler();

    Block b;
    b.thread_main = thread_main;
    b.ctx = ctx;
    b.shuffle = (cfg->flags & 1u) == 0;
    b.rng.s = cfg->seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    if (b.rng.s == 0) b.rng.s = 1;
    b.fibers.resize(nthreads);
    b.order.resize(nthreads);
    b.warps.resize((nthreads + 31) / 32);
    for (u32 i = 0; i < nthreads; i++)
    {
        Fiber& f = b.fibers[i];
        f.block = &b; f.linear = (int)i; f.lane = (int)(i & 31); f.warp = (int)(i >> 5);
        f.stack = tr.stacks[i];
        f.c.block_dim = {cfg->block[0], cfg->block[1], cfg->block[2]};
        f.c.grid_dim = {cfg->grid[0], cfg->grid[1], cfg->grid[2]};
        b.order[i] = (int)i;
        b.warps[i >> 5].existing |= 1u << (i & 31);
    }
    // Blocks run one after another in a shuffled order: start and stride coprime with the count.
    u64 start = b.shuffle ? b.rng.next() % nblocks : 0, stride = 1;
    if (b.shuffle && nblocks > 2)
        do stride = 1 + b.rng.next() % (nblocks - 1); while (gcd(stride, nblocks) != 1);

    tr.in_launch = true;
    tr.block = &b;
    int rc = 0;
    if (sigsetjmp(tr.fault_jump, 1) == 0)
    {
        for (u64 i = 0; i < nblocks && rc == 0; i++)
        {
            u64 lin = (start + i * stride) % nblocks;
            u32 bx = (u32)(lin % cfg->grid[0]), by = (u32)((lin / cfg->grid[0]) % cfg->grid[1]), bz = (u32)(lin / ((u64)cfg->grid[0] * cfg->grid[1]));
            rc = run_block(b, *cfg, bx, by, bz);
        }
    }
    else rc = 1;
    current = nullptr;
    tr.in_launch = false;
    tr.block = nullptr;
    return rc;
}

} // namespace emu

// ------------------------------------------------------------------------------- host API
using namespace emu;

EMU_API int emu_arch() { return __CUDA_ARCH__; }
EMU_API const char* emu_last_error() { return tr.error.c_str(); }

// guard: 0 none (16-byte aligned heap block), 1 PROT_NONE page right after the last byte,
// 2 PROT_NONE page right before the first byte. `align` applies to the start address in mode 1
// (end = page end - slack below align).
EMU_API void* emu_alloc(u64 bytes, int guard)
{
    size_t ps = page_size();
    size_t n = bytes == 0 ? 1 : (size_t)bytes;
    Allocation a{};
    a.bytes = n;
    a.guard = guard;
    if (guard == 0)
    {
        size_t total = (n + 255) & ~(size_t)255;
        void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return nullptr;
        a.map_base = static_cast<u8*>(p); a.map_bytes = total; a.user = a.map_base;
    }
    else
    {
        size_t data_pages = (n + ps - 1) / ps;
        size_t total = (data_pages + 1) * ps;
        void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return nullptr;
        a.map_base = static_cast<u8*>(p); a.map_bytes = total;
        if (guard == 1)
        {
            mprotect(a.map_base + data_pages * ps, ps, PROT_NONE);
            a.user = a.map_base + data_pages * ps - ((n + 3) & ~(size_t)3); // 4-byte aligned start, end at the guard
        }
        else
        {
            mprotect(a.map_base, ps, PROT_NONE);
            a.user = a.map_base + ps;
        }
    }
    std::lock_guard<std::mutex> lock(alloc_mutex);
    allocations[(uintptr_t)a.user] = a;
    return a.user;
}

EMU_API int emu_free(void* p)
{
    Allocation a;
    {
        std::lock_guard<std::mutex> lock(alloc_mutex);
        auto it = allocations.find((uintptr_t)p);
        if (it == allocations.end()) return 1;
        a = it->second;
        allocations.erase(it);
    }
    munmap(a.map_base, a.map_bytes);
    return 0;
}

// Element types of the emulated cublasGemmEx (CudaDream's DType codes of the host: F32 0, F16 1, BF16 2).
enum EmuGemmType { EMU_GEMM_F32 = 0, EMU_GEMM_F16 = 1, EMU_GEMM_BF16 = 2 };

static float emu_half_to_float(u16 h)
{
    u32 sign = (u32)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return __uint_as_float(sign | 0x7f800000u | (man << 13));
    if (exp == 0) { float f = (float)man * 5.9604644775390625e-8f; return man == 0 ? __uint_as_float(sign) : (sign ? -f : f); }
    return __uint_as_float(sign | ((exp + 112) << 23) | (man << 13));
}

// Round to nearest even (cuBLAS's conversion of the fp32 result into a reduced-precision C).
static u16 emu_float_to_half(float f)
{
    u32 u = __float_as_uint(f), sign = (u >> 16) & 0x8000, a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) return (u16)(sign | 0x7c00 | (a > 0x7f800000u ? 0x200 : 0));
    if (a >= 0x477ff000u) return (u16)(sign | 0x7c00);
    if (a < 0x38800000u)
    {
        float v = __uint_as_float(a) * 16777216.0f;
        u32 q = (u32)v; float rem = v - (float)q;
        if (rem > 0.5f || (rem == 0.5f && (q & 1))) q++;
        return (u16)(sign | q);
    }
    u32 r = a + 0x0fffu + ((a >> 13) & 1) - 0x38000000u;
    return (u16)(sign | (r >> 13));
}

static float emu_load(int type, const void* p, i64 i)
{
    if (type == EMU_GEMM_F32) return static_cast<const float*>(p)[i];
    const u16 h = static_cast<const u16*>(p)[i];
    return type == EMU_GEMM_F16 ? emu_half_to_float(h) : __uint_as_float((u32)h << 16);
}

static void emu_store(int type, void* p, i64 i, float v)
{
    if (type == EMU_GEMM_F32) { static_cast<float*>(p)[i] = v; return; }
    u16 h;
    if (type == EMU_GEMM_F16) h = emu_float_to_half(v);
    else
    {
        const u32 u = __float_as_uint(v);
        h = (u & 0x7fffffffu) > 0x7f800000u ? (u16)((u >> 16) | 0x40) : (u16)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
    }
    static_cast<u16*>(p)[i] = h;
}

// cuBLAS semantics, column-major: C = alpha * op(A) * op(B) + beta * C for each of `batch`
// matrices; op(X) = X (0) or X^T (1). A and B are of type `ab`, C of type `ct` (fp32 math: the
// reduced-precision inputs widened, products summed in double, the result rounded once into C's type,
// as cublasGemmEx with CUBLAS_COMPUTE_32F does up to its summation order). Returns cuBLAS status codes
// (7 = INVALID_VALUE) for the argument checks cuBLAS makes, so a wrong leading dimension fails here as
// it would on a GPU. When beta == 0, C is not read (NaN in C does not propagate), as in cuBLAS.
EMU_API int emu_gemm_ex(int ab, int ct, int transa, int transb, int m, int n, int k, float alpha, const void* A, int lda, i64 strideA,
                        const void* B, int ldb, i64 strideB, float beta, void* C, int ldc, i64 strideC, int batch)
{
    tr.error.clear();
    auto bad = [](const char* what) { tr.error = std::string("gemm: invalid argument: ") + what; return 7; };
    if (ab < 0 || ab > 2 || ct < 0 || ct > 2) return bad("element type");
    if (transa < 0 || transa > 1 || transb < 0 || transb > 1) return bad("transa/transb");
    if (m < 0 || n < 0 || k < 0 || batch < 0) return bad("negative m, n, k or batch");
    if (lda < std::max(1, transa ? k : m)) return bad("lda < rows of A");
    if (ldb < std::max(1, transb ? n : k)) return bad("ldb < rows of B");
    if (ldc < std::max(1, m)) return bad("ldc < m");
    install_fault_handler();
    tr.kernel = "gemm";
    tr.in_launch = true;
    int rc = 0;
    // op(A) rows and op(B) columns are packed contiguous first, so every dot product streams through
    // memory (the strided walk was most of an emulated VAE's time). Buffers are per thread and reused:
    // a fault jumps out of this block without leaking them.
    static thread_local std::vector<float> rows, cols;
    if (sigsetjmp(tr.fault_jump, 1) == 0)
    {
        rows.resize((size_t)m * k);
        cols.resize((size_t)n * k);
        for (int p = 0; p < batch; p++)
        {
            const i64 oa = p * strideA, ob = p * strideB, oc = p * strideC;
            for (int i = 0; i < m; i++)
                for (int l = 0; l < k; l++) rows[(size_t)i * k + l] = emu_load(ab, A, oa + (transa ? l + (i64)i * lda : i + (i64)l * lda));
            for (int j = 0; j < n; j++)
                for (int l = 0; l < k; l++) cols[(size_t)j * k + l] = emu_load(ab, B, ob + (transb ? j + (i64)l * ldb : l + (i64)j * ldb));
            for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++)
                {
                    const float* x = &rows[(size_t)i * k];
                    const float* y = &cols[(size_t)j * k];
                    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                    int l = 0;
                    for (; l + 4 <= k; l += 4)
                    {
                        s0 += (double)x[l] * y[l];
                        s1 += (double)x[l + 1] * y[l + 1];
                        s2 += (double)x[l + 2] * y[l + 2];
                        s3 += (double)x[l + 3] * y[l + 3];
                    }
                    for (; l < k; l++) s0 += (double)x[l] * y[l];
                    const double acc = (s0 + s1) + (s2 + s3);
                    const i64 ci = oc + i + (i64)j * ldc;
                    const double old = beta == 0.0f ? 0.0 : (double)emu_load(ct, C, ci);
                    emu_store(ct, C, ci, beta == 0.0f ? (float)(alpha * acc) : (float)(alpha * acc + (double)beta * old));
                }
        }
    }
    else rc = 13; // CUBLAS_STATUS_EXECUTION_FAILED
    tr.in_launch = false;
    return rc;
}
