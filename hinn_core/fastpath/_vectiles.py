"""The products' register tiles written as explicit LLVM vectors: ``Z (+)= A @ K`` for widths 32 and 64.

`hinn_core.fastpath._trunk.matmul`'s loops leave the accumulators in memory: numba cannot say that
``Z`` does not alias ``A`` or ``K``, so LLVM loads and stores each output vector at every step of
the sum. `vector_tiles` emits the tile itself (an intrinsic): ``RT`` rows × ``NC`` columns of
accumulators held as LLVM vectors (registers) through the whole sum over ``K``'s rows, one
vector load of ``K[i]`` serving ``RT`` broadcast multiply-adds (``llvm.fma``), and one store per
output vector at the end. Each output element is the plain multiply-add chain
``z ← fma(a_i, k_i, z)`` over ``i`` in order (round-off differs from `matmul`'s paired sums only).

`vector_row` does one row (batch 1, and the rows no tile covers): there the chain over ``i`` is
split into up to four independent ones (``i mod P``, added pairwise at the end), since a row has
too few vectors to hide the multiply-add latency otherwise.

Tiles and rows fit the target's vector registers (`tile_shape`, `row_shape`), read from the
features numba compiles for: half of the register file holds accumulators (AVX-512: 32 × 64-byte
registers, or 32-byte ones where LLVM is told to prefer 256-bit vectors; AVX2 and older: 16 × 32
or 16 bytes). `python -m bench.perf.kernels` compares them with the loop tiles.
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


def _literal_width(A, K, Z, N, b) -> int | None:
    """The intrinsics' typing: ``N`` as a literal width (None until numba offers the literal), with
    the arguments checked (a `TypingError` names the one at fault). ``b``: None, or the bias, a 1-d
    C-contiguous array of the same dtype (``N`` entries read)."""
    if not isinstance(N, types.IntegerLiteral):
        return None
    width = N.literal_value
    if width not in WIDTHS:
        raise TypingError(f"vector tiles: width must be one of {WIDTHS}, got {width}")
    for name, ary in (("A", A), ("K", K), ("Z", Z)):
        if not (isinstance(ary, types.Array) and ary.ndim == 2 and ary.layout == "C"):
            raise TypingError(f"vector tiles: {name} must be a 2-d C-contiguous array, got {ary}")
    if not (A.dtype == K.dtype == Z.dtype and isinstance(Z.dtype, types.Float)):
        raise TypingError(f"vector tiles: one float dtype expected, got {A.dtype}, {K.dtype}, {Z.dtype}")
    if not (isinstance(b, (types.NoneType, types.Omitted))
            or (isinstance(b, types.Array) and b.ndim == 1 and b.layout == "C" and b.dtype == Z.dtype)):
        raise TypingError(f"vector tiles: b must be None or a 1-d C-contiguous {Z.dtype} array, got {b}")
    return width


class _Emitter:
    """The IR pieces both intrinsics emit for ``(A, K, Z, index, accumulate, N, b)``: the index and the
    flag as values, element addresses, ``NC``-wide vector loads, and broadcast multiply-adds into
    ``lead`` accumulator slots (allocas that LLVM promotes to registers)."""

    def __init__(self, context, builder, sig, args, shape) -> None:
        self.builder = builder
        self.index = context.cast(builder, args[3], sig.args[3], types.intp)
        self.keep = context.cast(builder, args[4], sig.args[4], types.boolean)
        self.arrays = [context.make_array(t)(context, builder, v) for t, v in zip(sig.args[:3], args[:3], strict=True)]
        self.bias = (context.make_array(sig.args[6])(context, builder, args[6])
                     if isinstance(sig.args[6], types.Array) else None)
        self.T = context.get_value_type(sig.args[2].dtype)
        self.itemsize = context.get_abi_sizeof(self.T)
        self.lead, self.nc = shape(_features(context), self.itemsize)
        self.VT = ir.VectorType(self.T, self.nc)
        self.intp = context.get_value_type(types.intp)
        self.zero = ir.Constant(self.VT, None)
        self.strides = [cgutils.unpack_tuple(builder, a.strides, 2)[0] for a in self.arrays]
        self.m = cgutils.unpack_tuple(builder, self.arrays[1].shape, 2)[0]  # K's rows
        self._fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(self.VT, [self.VT] * 3),
                                                   f"llvm.fma.v{self.nc}f{8 * self.itemsize}")
        self._undef = ir.Constant(self.VT, ir.Undefined)
        self._splat = ir.Constant(ir.VectorType(ir.IntType(32), self.nc), [0] * self.nc)
        self.slots = [cgutils.alloca_once(builder, self.VT) for _ in range(self.lead)]

    def const(self, v: int):
        return ir.Constant(self.intp, v)

    def address(self, which: int, row, col, vector: bool):
        """Pointer to ``(A, K, Z)[which][row, col]``, as a vector or a scalar pointer."""
        b = self.builder
        offset = b.add(b.mul(row, self.strides[which]), b.mul(col, self.const(self.itemsize)))
        raw = b.gep(b.bitcast(self.arrays[which].data, ir.IntType(8).as_pointer()), [offset])
        return b.bitcast(raw, (self.VT if vector else self.T).as_pointer())

    def load_k(self, i, col):
        return self.builder.load(self.address(1, i, col, True), align=self.itemsize)

    def start(self, slot, row, col, first: bool) -> None:
        """Set an accumulator to ``b[col:col+NC]`` (with a bias), ``Z[row, col:col+NC]`` (when
        accumulating) or zero; not ``first`` (a row's second and later chains): zero."""
        value = self.zero
        if first and self.bias is not None:
            b = self.builder
            raw = b.gep(b.bitcast(self.bias.data, ir.IntType(8).as_pointer()), [b.mul(col, self.const(self.itemsize))])
            value = b.load(b.bitcast(raw, self.VT.as_pointer()), align=self.itemsize)
        elif first:
            z = self.builder.load(self.address(2, row, col, True), align=self.itemsize)
            value = self.builder.select(self.keep, z, self.zero)
        self.builder.store(value, slot)

    def fma_into(self, slot, row, i, kv) -> None:
        """``slot ← fma(broadcast(A[row, i]), kv, slot)``."""
        b = self.builder
        a = b.load(self.address(0, row, i, False))
        first = b.insert_element(self._undef, a, ir.Constant(ir.IntType(32), 0))
        av = b.shuffle_vector(first, self._undef, self._splat)
        b.store(b.call(self._fma, [av, kv, b.load(slot)]), slot)

    def finish(self, value, row, col) -> None:
        self.builder.store(value, self.address(2, row, col, True), align=self.itemsize)


@intrinsic(prefer_literal=True)
def vector_tiles(typingctx, A, K, Z, R, accumulate, N, b):
    """``Z[r] (+)= A[r] @ K`` for the rows ``r`` < ``R`` that fill whole tiles; returns how many
    rows that is (a multiple of the tile's rows; 0 when ``R`` is smaller). ``K: (m, N)`` with
    ``N`` a literal in `WIDTHS`; ``A`` may be wider than ``m``; all C-contiguous. With a bias
    ``b`` (not None), ``Z[r] = b + A[r] @ K`` whatever ``accumulate`` says: the sums start from
    ``b`` in registers, no pass that first fills ``Z`` with it."""
    width = _literal_width(A, K, Z, N, b)
    if width is None:
        return None

    def codegen(context, builder, sig, args):
        e = _Emitter(context, builder, sig, args, lambda f, size: tile_shape(f, size, width))
        rt, slots = e.lead, e.slots
        done = builder.mul(builder.sdiv(e.index, e.const(rt)), e.const(rt))
        with cgutils.for_range_slice(builder, e.const(0), done, e.const(rt), e.intp) as (r, _):
            tile_rows = [builder.add(r, e.const(k)) for k in range(rt)]
            for c0 in range(0, width, e.nc):
                col = e.const(c0)
                for slot, row in zip(slots, tile_rows, strict=True):
                    e.start(slot, row, col, True)
                with cgutils.for_range(builder, e.m) as loop:
                    kv = e.load_k(loop.index, col)
                    for slot, row in zip(slots, tile_rows, strict=True):
                        e.fma_into(slot, row, loop.index, kv)
                for slot, row in zip(slots, tile_rows, strict=True):
                    e.finish(builder.load(slot), row, col)
        return done

    return types.intp(A, K, Z, R, accumulate, N, b), codegen


def row_shape(features: str, itemsize: int, width: int) -> tuple[int, int]:
    """(partial sums P, columns NC) of `vector_row`: the whole row in one pass where two chains of
    it fit the accumulator budget (each ``A[r, i]`` broadcast once), else chunks of two registers;
    up to four independent chains over ``K``'s rows."""
    vbytes, regs = register_budget(features)
    lanes = vbytes // itemsize
    nc = width if 2 * max(1, width // lanes) <= regs else min(width, 2 * lanes)
    per_chain = max(1, nc // lanes)
    return max(1, min(4, regs // per_chain)), nc


@intrinsic(prefer_literal=True)
def vector_row(typingctx, A, K, Z, r, accumulate, N, b):
    """``Z[r] (+)= A[r] @ K`` for one row (batch 1, and the rows `vector_tiles` leaves): the sum over
    ``K``'s rows split into ``P`` independent chains (``i mod P``, added pairwise at the end), since
    one chain of dependent multiply-adds on a row's few vectors would wait on each one's latency.
    Arguments as `vector_tiles` (the bias starts chain 0)."""
    width = _literal_width(A, K, Z, N, b)
    if width is None:
        return None

    def codegen(context, builder, sig, args):
        e = _Emitter(context, builder, sig, args, lambda f, size: row_shape(f, size, width))
        row, parts, slots = e.index, e.lead, e.slots
        whole = builder.mul(builder.sdiv(e.m, e.const(parts)), e.const(parts))
        for c0 in range(0, width, e.nc):
            col = e.const(c0)
            for p, slot in enumerate(slots):
                e.start(slot, row, col, p == 0)
            with cgutils.for_range_slice(builder, e.const(0), whole, e.const(parts), e.intp) as (i0, _):
                for p, slot in enumerate(slots):
                    i = builder.add(i0, e.const(p))
                    e.fma_into(slot, row, i, e.load_k(i, col))
            with cgutils.for_range_slice(builder, whole, e.m, e.const(1), e.intp) as (i, _):
                e.fma_into(slots[0], row, i, e.load_k(i, col))
            sums = [builder.load(slot) for slot in slots]
            while len(sums) > 1:  # pairwise: (s0 + s1) + (s2 + s3)
                sums = [builder.fadd(sums[k], sums[k + 1]) if k + 1 < len(sums) else sums[k]
                        for k in range(0, len(sums), 2)]
            e.finish(sums[0], row, col)
        return context.get_dummy_value()

    return types.none(A, K, Z, r, accumulate, N, b), codegen
