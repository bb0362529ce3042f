"""Compile the kernels into numba's disk cache: ``python -m hinn_core.fastpath [--jobs N]``.

Run once after installing (``make install`` and the Docker image do) so that the first prediction
does not pay the compilation: about a minute of one core per kernel and dtype (`KERNELS` × float64,
float32; the adaptive kernel about 20 s), so 5-10 min in one process. ``--jobs`` (default:
`default_jobs`) compiles them in that many processes at once, then loads them all here to check
the cache is complete.

The processes share numba's cache safely because `hinn_core.fastpath` locks its saves
(`hinn_core.fastpath.cachelock`); where that lock is not installed (no ``fcntl``, a numba without
``IndexDataCacheFile.save``, an unusual cache location) compilation runs in this process alone.
Whatever the children did, the final `warm` here compiles anything missing.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

from hinn_core.fastpath import KERNELS, available, warm
from hinn_core.fastpath.cachelock import installed


def _compile_in_child(dtype_name: str, kernel: str) -> tuple[str, str, float]:
    import torch

    from hinn_core.fastpath import compile_kernels  # installs the cache lock (`cachelock`)

    if installed() is None:
        raise RuntimeError("numba's cache saves are not locked in this process")
    started = time.perf_counter()
    compile_kernels(getattr(torch, dtype_name), kernel)
    return dtype_name, kernel, time.perf_counter() - started


def compile_all(jobs: int) -> float:
    """Compile every kernel and dtype with up to ``jobs`` processes, then `warm` this process from
    the cache; seconds taken."""
    started = time.perf_counter()
    # both dtypes of one kernel at a time: two processes then compile each dtype's shared
    # functions once (a third and fourth would load them from the cache or compile them again)
    work = [(dtype, kernel) for kernel in KERNELS for dtype in ("float64", "float32")]
    jobs = min(jobs, len(work))
    if jobs > 1 and installed() is not None:  # the children install the same lock on import
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_compile_in_child, dtype, kernel) for dtype, kernel in work]
            for future in as_completed(futures):
                dtype, kernel, seconds = future.result()
                print(f"  {kernel} kernels, {dtype}: {seconds:.1f} s", flush=True)
    loaded = warm()
    print(f"  loaded in this process: {loaded:.1f} s ({_compiled_here()} kernel signatures compiled here)", flush=True)
    return time.perf_counter() - started


def _compiled_here() -> int:
    """Signatures of the entry kernels this process compiled rather than loaded from the cache."""
    from hinn_core.fastpath import _adaptive, _adjoint, _derivatives, _rollout

    entries = (_rollout.rollout, _adjoint.rollout_vjp, _adaptive.rk45, _derivatives.grad_hessian)
    return sum(sum(d.stats.cache_misses.values()) for d in entries)


#: peak resident memory of one compiling process (torch, numba and LLVM; measured 1.3 GB)
JOB_MEMORY = 1536 << 20


def available_memory() -> int | None:
    """Bytes of memory available for new processes (MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_jobs() -> int:
    """The CPUs available, at most 4 (six kernel builds; a fifth process would mostly compile what
    another already did) and at most as many as the available
    memory holds at `JOB_MEMORY` each (an image build on a small machine must not run out)."""
    jobs = min(4, len(os.sched_getaffinity(0)))
    memory = available_memory()
    return jobs if memory is None else max(1, min(jobs, memory // JOB_MEMORY))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hinn_core.fastpath",
                                     description=__doc__.splitlines()[0].rstrip(":"))
    parser.add_argument("--jobs", type=int, default=default_jobs(),
                        help="processes compiling at once (default: the CPUs available, at most 4 and "
                             "at most one per 1.5 GiB of available memory)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if not available():
        raise SystemExit("numba is not installed: the compiled prediction path is unavailable")
    print(f"hinn fast path ready ({compile_all(args.jobs):.1f} s)")
