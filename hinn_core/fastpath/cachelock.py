"""numba's disk cache made safe for several processes compiling the kernels at once.

numba saves a compiled signature by read-modify-write of the function's index file, then writes
the object code under the name it chose. Two processes saving different signatures of one
function at the same moment (``hinn serve``'s warm-up beside a worker process, the parallel
``python -m hinn_core.fastpath``, two test processes) could therefore drop an entry or file one
signature's code under the other's name. `serialise_cache_saves` wraps numba's save in an
exclusive file lock that every process sharing the cache takes; `hinn_core.fastpath` installs it
at import, with the lock file beside the cached kernels.
"""

from __future__ import annotations

#: the lock file's name in the kernels' cache folder
LOCK_NAME = "hinn-kernels.lock"


def lockable() -> bool:
    """fcntl exists and numba's cache saves go through ``IndexDataCacheFile.save``."""
    try:
        import fcntl  # noqa: F401

        from numba.core.caching import IndexDataCacheFile
    except ImportError:
        return False
    return callable(getattr(IndexDataCacheFile, "save", None))


def installed() -> str | None:
    """The lock file this process's numba cache saves take, None when they take none."""
    try:
        from numba.core.caching import IndexDataCacheFile
    except ImportError:
        return None
    return getattr(IndexDataCacheFile.save, "hinn_lock", None)


def serialise_cache_saves(lock_path: str) -> bool:
    """Make numba's cache saves in this process exclusive under ``lock_path``; False when that
    cannot be done here. Called again, it re-targets the one wrapper (never wraps a wrapper: one
    process would then take its own lock twice, on two descriptions, and wait for ever). A lock
    file that cannot be opened leaves that save unlocked, as numba's own would be."""
    if not lockable():
        return False
    import fcntl

    from numba.core.caching import IndexDataCacheFile

    save = getattr(IndexDataCacheFile.save, "hinn_wrapped", IndexDataCacheFile.save)

    def locked_save(self, key, data):  # type: ignore[no-untyped-def]
        try:
            fh = open(lock_path, "a")  # noqa: SIM115 - closed below, after the save
        except OSError:
            return save(self, key, data)
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                return save(self, key, data)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    locked_save.hinn_wrapped = save  # type: ignore[attr-defined]
    locked_save.hinn_lock = lock_path  # type: ignore[attr-defined]
    IndexDataCacheFile.save = locked_save
    return True
