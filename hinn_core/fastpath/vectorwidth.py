"""512-bit vectors for the compiled kernels on CPUs with AVX-512.

LLVM tunes Intel's AVX-512 server cores (Skylake-X through Emerald Rapids) with the
``prefer-256-bit`` feature: its vectoriser then emits 256-bit vectors only, because 512-bit code
once cost clock speed. The kernels' loops (a layer's elements, the register tiles' rows) are long
and purely arithmetic, so the wider vectors pay: on an Emerald Rapids machine (2 CPUs,
2026-11-29) batch-4096 rollouts ran 1.12–1.30× faster across integrators, sizes and both dtypes,
batch 1 1.00–1.27×, with bitwise the same trajectories (the loops' operations and their order
are unchanged; only how many lanes run at once).

`prefer_wide_vectors` appends ``-prefer-256-bit`` to the host's features through numba's own
setting (``NUMBA_CPU_FEATURES``), before numba builds its code generator. The variable stays in
the environment, so worker processes (the parallel precompile, a server's workers) compile for,
and find in the cache, the same target. It does nothing where the user set ``NUMBA_CPU_NAME`` or
``NUMBA_CPU_FEATURES`` (their choice wins), where ``HINN_FASTPATH_WIDE_VECTORS=0``, on CPUs
without AVX-512, and once numba has compiled anything in this process (its target is fixed then).
"""

from __future__ import annotations

import os

#: numba's own settings; either set by the user disables this module
FEATURES_ENV, CPU_NAME_ENV = "NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME"
#: ``0`` keeps LLVM's own vector width
OPT_OUT_ENV = "HINN_FASTPATH_WIDE_VECTORS"
WIDE = "-prefer-256-bit"


def wide_features(host: str) -> str | None:
    """``host`` (LLVM's comma-separated ``+feat``/``-feat`` list) with 512-bit vectors preferred,
    or None where it has no AVX-512 Foundation."""
    flags = host.split(",") if host else []
    if "+avx512f" not in flags:
        return None
    return ",".join([f for f in flags if f not in ("+prefer-256-bit", WIDE)] + [WIDE])


def _codegen_started() -> bool:
    """numba's CPU target context (and with it the code generator and its features) exists."""
    from numba.core.registry import cpu_target

    return "_toplevel_target_context" in vars(cpu_target)


def prefer_wide_vectors() -> str | None:
    """Ask numba for 512-bit vectors where that applies (module docstring); the feature string
    set, or None when nothing was changed."""
    if os.environ.get(OPT_OUT_ENV, "1").strip() == "0":
        return None
    if FEATURES_ENV in os.environ or CPU_NAME_ENV in os.environ:
        return None
    try:
        import llvmlite.binding as llvm
        from numba.core import config

        if _codegen_started():
            return None
        features = wide_features(llvm.get_host_cpu_features().flatten())
    except Exception:  # noqa: BLE001 - an unknown numba/llvmlite layout keeps the defaults
        return None
    if features is None:
        return None
    os.environ[FEATURES_ENV] = features
    config.reload_config()
    return features


def active_features() -> str:
    """The feature string numba's code generator uses in this process (it is created if needed)."""
    from numba.core.registry import cpu_target

    return cpu_target.target_context.codegen()._tm_features
