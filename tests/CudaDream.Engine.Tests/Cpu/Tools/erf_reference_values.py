"""Reference values for ErfTests and the coefficients of SpecialFunctions.Erf (run: python3 erf_reference_values.py).

Needs mpmath (1.3.0 was used). Prints (1) the Chebyshev interpolants used in
src/CudaDream.Engine/Backends/Cpu/Kernels/Reference/SpecialFunctions.cs, highest power first, and
(2) the double and float tables of ErfTests: erf at 40 digits rounded once to the target type.
"""
import random
import mpmath

mpmath.mp.dps = 60


def erf_over_x(y):
    """erf(sqrt(y)) / sqrt(y), the function P approximates on y in [0, 1]."""
    y = mpmath.mpf(y)
    if y == 0:
        return 2 / mpmath.sqrt(mpmath.pi)
    s = mpmath.sqrt(y)
    return mpmath.erf(s) / s


def scaled_erfc(x):
    """erfc(x) * exp(x^2), the function Q_k approximates on [1,2), [2,3), [3,4), [4,6)."""
    x = mpmath.mpf(x)
    return mpmath.erfc(x) * mpmath.exp(x * x)


def coefficients():
    small = mpmath.chebyfit(erf_over_x, [0, 1], 14)
    c0 = small[-1]
    print("C0Hi", repr(float(c0)), "C0Lo", repr(float(c0 - mpmath.mpf(float(c0)))))
    print("SmallTail", [repr(float(c)) for c in small[:-1]])
    for lo, hi, count in [(1, 2, 18), (2, 3, 15), (3, 4, 13), (4, 6, 13)]:
        mid = mpmath.mpf(lo + hi) / 2
        q = mpmath.chebyfit(lambda u: scaled_erfc(mid + u), [lo - mid, hi - mid], count)
        print(f"Range{lo}To{hi}", [repr(float(c)) for c in q])


def tables():
    mpmath.mp.dps = 40
    random.seed(12345)
    xs = [0.0, 5e-324, 1e-300, 1e-20, 1e-10, 1e-5, 0.001, 0.1, 0.25, 0.5, 0.75, 0.9999999999999999, 1.0,
          1.0000000000000002, 1.5, 1.9999999999999998, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 5.9, 5.95, 6.0, 8.0, 27.0]
    xs += [round(random.uniform(0, 1), 6) for _ in range(20)]
    xs += [round(random.uniform(1, 6), 6) for _ in range(30)]
    for x in xs:
        print(f"        {{ {x!r}, {float(mpmath.erf(mpmath.mpf(x)))!r} }},")
    import struct
    f32 = lambda v: struct.unpack('<f', struct.pack('<f', float(v)))[0]
    random.seed(777)
    xs = [f32(random.uniform(0, 4.2)) for _ in range(40)] + [f32(1e-30), f32(1e-3), f32(0.5), f32(1.0), f32(3.9)]
    for x in xs:
        exact = mpmath.erf(mpmath.mpf(x))  # at 40 digits
        with mpmath.workprec(24):
            r = +exact  # one rounding to float's 24-bit significand
        print(f"        {{ {float(x)!r}f, {float(r)!r}f }},")


if __name__ == "__main__":
    coefficients()
    tables()
