"""The products' register tiles written as explicit LLVM vectors: ``Z (+)= A @ K`` for widths 32 and 64.

`hinn_core.fastpath._trunk.matmul`'s loops leave the accumulators in memory: numba cannot say that
``Z`` does not alias ``A`` or ``K``, so LLVM loads and stores each output vector at every step of
the sum. `vector_tiles` emits the tile itself (an intrinsic): ``RT`` rows × ``NC`` columns of
accumulators held as LLVM vectors (registers) through the whole sum over ``K``'s rows, one
vector load of ``K[i]`` serving ``RT`` broadcast multiply-adds (``llvm.fma``), and one store per
output vector at the end. Each output element is the plain multiply-add chain
``z ← fma(a_i, k_i, z)`` over ``i`` in order (round-off differs from `matmul`'s paired sums only).

The tile fits the target's vector registers (`tile_shape`), read from the features numba compiles
for: half of the register file holds accumulators (AVX-512: 32 × 64-byte registers, or 32-byte
ones where LLVM is told to prefer 256-bit vectors; AVX2 and older: 16 × 32 or 16 bytes).
`python -m bench.perf.kernels` compares it with `matmul`'s tiles.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

#: the widths that get vector tiles (the trunks' common widths; others keep `matmul`'s loops)
WIDTHS = (32, 64)


def register_budget(features: str) -> tuple[int, int]:
    """(vector register bytes, registers for accumulators) for LLVM's feature string."""
    flags = set(features.split(","))
    if "+avx512f" in flags:
        return (32 if "+prefer-256-bit" in flags else 64), 16
    if "+avx" in flags:
        return 32, 8
    return 16, 8


def tile_shape(features: str, itemsize: int, width: int) -> tuple[int, int]:
    """(rows RT, columns NC) of one tile: two vector registers per row (``NC`` columns, at most
    ``width``), as many rows as the accumulator registers hold."""
    vbytes, regs = register_budget(features)
    lanes = vbytes // itemsize
    nc = min(width, 2 * lanes)
    per_row = max(1, nc // lanes)
    return max(1, regs // per_row), nc


def _features(context) -> str:
    try:
        return str(context.codegen()._tm_features)
    except AttributeError:  # an unknown numba layout: the smallest budget is safe everywhere
        return ""


@intrinsic(prefer_literal=True)
def vector_tiles(typingctx, A, K, Z, R, accumulate, N):
    """``Z[r] (+)= A[r] @ K`` for the rows ``r`` < ``R`` that fill whole tiles; returns how many
    rows that is (a multiple of the tile's rows; 0 when ``R`` is smaller). ``K: (m, N)`` with
    ``N`` a literal in `WIDTHS`; ``A`` may be wider than ``m``; all C-contiguous."""
    if not isinstance(N, types.IntegerLiteral):
        return None
    width = N.literal_value
    if width not in WIDTHS:
        raise TypingError(f"vector_tiles: width must be one of {WIDTHS}, got {width}")
    for name, ary in (("A", A), ("K", K), ("Z", Z)):
        if not (isinstance(ary, types.Array) and ary.ndim == 2 and ary.layout == "C"):
            raise TypingError(f"vector_tiles: {name} must be a 2-d C-contiguous array, got {ary}")
    if not (A.dtype == K.dtype == Z.dtype and isinstance(Z.dtype, types.Float)):
        raise TypingError(f"vector_tiles: one float dtype expected, got {A.dtype}, {K.dtype}, {Z.dtype}")

    def codegen(context, builder, sig, args):
        arrays = [context.make_array(t)(context, builder, v) for t, v in zip(sig.args[:3], args[:3], strict=True)]
        aA, aK, aZ = arrays
        rows = context.cast(builder, args[3], sig.args[3], types.intp)
        keep = context.cast(builder, args[4], sig.args[4], types.boolean)
        T = context.get_value_type(sig.args[2].dtype)
        itemsize = context.get_abi_sizeof(T)
        rt, nc = tile_shape(_features(context), itemsize, width)
        VT = ir.VectorType(T, nc)
        intp = context.get_value_type(types.intp)
        i8p = ir.IntType(8).as_pointer()
        const = lambda v: ir.Constant(intp, v)  # noqa: E731

        def row_stride(ary):
            return cgutils.unpack_tuple(builder, ary.strides, 2)[0]

        sA, sK, sZ = (row_stride(a) for a in arrays)

        def element(ary, stride, row, col, ty):
            offset = builder.add(builder.mul(row, stride), builder.mul(col, const(itemsize)))
            return builder.bitcast(builder.gep(builder.bitcast(ary.data, i8p), [offset]), ty.as_pointer())

        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(VT, [VT, VT, VT]),
                                             f"llvm.fma.v{nc}f{8 * itemsize}")
        undef = ir.Constant(VT, ir.Undefined)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), nc), [0] * nc)
        zero_i32 = ir.Constant(ir.IntType(32), 0)
        slots = [cgutils.alloca_once(builder, VT) for _ in range(rt)]
        m = cgutils.unpack_tuple(builder, aK.shape, 2)[0]
        done = builder.mul(builder.sdiv(rows, const(rt)), const(rt))
        with cgutils.for_range_slice(builder, const(0), done, const(rt), intp) as (r, _):
            for c0 in range(0, width, nc):
                col = const(c0)
                outs = [element(aZ, sZ, builder.add(r, const(k)), col, VT) for k in range(rt)]
                for slot, out in zip(slots, outs, strict=True):
                    builder.store(builder.select(keep, builder.load(out, align=itemsize), ir.Constant(VT, None)), slot)
                with cgutils.for_range(builder, m) as loop:
                    i = loop.index
                    kv = builder.load(element(aK, sK, i, col, VT), align=itemsize)
                    for k, slot in enumerate(slots):
                        a = builder.load(element(aA, sA, builder.add(r, const(k)), i, T))
                        av = builder.shuffle_vector(builder.insert_element(undef, a, zero_i32), undef, splat)
                        builder.store(builder.call(fma, [av, kv, builder.load(slot)]), slot)
                for slot, out in zip(slots, outs, strict=True):
                    builder.store(builder.load(slot), out, align=itemsize)
        return done

    return types.intp(A, K, Z, R, accumulate, N), codegen
