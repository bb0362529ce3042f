"""`hinn_core.fastpath.vectorwidth`: 512-bit vectors asked of numba on AVX-512 hosts, and only there.

The decision is a pure function of LLVM's feature string (tested on made-up strings); what the
import does to a fresh process is checked in subprocesses, since numba's target is fixed once its
code generator exists: the environment numba reads, the features its code generator uses, and the
width of the registers in a compiled loop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import llvmlite.binding as llvm
import pytest

from hinn_core.fastpath import vectorwidth

ROOT = Path(__file__).resolve().parents[2]
HOST = llvm.get_host_cpu_features().flatten()
AVX512 = "+avx512f" in HOST.split(",")


def test_wide_features_only_with_avx512() -> None:
    assert vectorwidth.wide_features("+avx2,+fma,-avx512f") is None
    assert vectorwidth.wide_features("+avx2,+fma") is None
    assert vectorwidth.wide_features("") is None
    assert vectorwidth.wide_features("+avx2,+avx512f,+fma") == "+avx2,+avx512f,+fma,-prefer-256-bit"


def test_wide_features_replace_an_explicit_preference_once() -> None:
    for given in ("+avx512f,+prefer-256-bit", "+avx512f,-prefer-256-bit", "+avx512f"):
        out = vectorwidth.wide_features(given)
        assert out is not None
        assert out.split(",") == ["+avx512f", "-prefer-256-bit"]


_PROBE = """
import json, os, re
import numpy as np
from numba import njit
import hinn_core.fastpath as fp
from hinn_core.fastpath.vectorwidth import active_features

@njit(fastmath={"contract"})
def axpy(a, x, y):
    for i in range(x.shape[0]):
        y[i] += a * x[i]

x = np.ones(1024, np.float32)
axpy(np.float32(2.0), x, x.copy())
asm = next(iter(axpy.inspect_asm().values()))
print(json.dumps({"wide": fp.WIDE_VECTORS, "env": os.environ.get("NUMBA_CPU_FEATURES"),
                  "active": active_features(), "zmm": len(re.findall(r"\\bzmm", asm))}))
"""


def _probe(tmp_path: Path, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME",
                                                              vectorwidth.OPT_OUT_ENV)}
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**clean, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), **env}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(180)
def test_import_widens_vectors_on_avx512_hosts(tmp_path: Path) -> None:
    got = _probe(tmp_path)
    active = str(got["active"]).split(",")
    if AVX512:
        assert got["wide"] == got["env"] == got["active"]
        assert active[-1] == "-prefer-256-bit"
        assert got["zmm"] > 0  # the loop runs on 512-bit registers
    else:  # nothing to widen: numba keeps the host's own features
        assert got["wide"] is None and got["env"] is None
        assert "-prefer-256-bit" not in active and got["zmm"] == 0


@pytest.mark.timeout(180)
@pytest.mark.parametrize("env", [{vectorwidth.OPT_OUT_ENV: "0"}, {"NUMBA_CPU_FEATURES": "+avx2,+fma,-avx512f"},
                                 {"NUMBA_CPU_NAME": "generic"}], ids=["opt-out", "user-features", "user-cpu"])
def test_users_settings_win(tmp_path: Path, env: dict[str, str]) -> None:
    got = _probe(tmp_path, **env)
    assert got["wide"] is None
    assert got["env"] == env.get("NUMBA_CPU_FEATURES")
    # numba's own choice: the host's features, the user's, or none for the generic CPU
    assert got["active"] == env.get("NUMBA_CPU_FEATURES", "" if "NUMBA_CPU_NAME" in env else HOST)
    # the user's features add to those the host CPU's name implies (LLVM keeps AVX-512 on a Zen 4
    # named `znver4` unless told "-avx512f"), so this user turns it off; the generic CPU has none
    assert got["zmm"] == 0 or "NUMBA_CPU_NAME" not in env and "NUMBA_CPU_FEATURES" not in env


def test_no_change_once_numba_has_compiled() -> None:
    # this test process imported hinn_core.fastpath long ago: numba's target exists and stays
    assert vectorwidth._codegen_started()
    before = os.environ.get("NUMBA_CPU_FEATURES")
    saved = {k: os.environ.pop(k) for k in ("NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME") if k in os.environ}
    try:
        assert vectorwidth.prefer_wide_vectors() is None
        assert "NUMBA_CPU_FEATURES" not in os.environ
    finally:
        os.environ.update(saved)
    assert os.environ.get("NUMBA_CPU_FEATURES") == before
