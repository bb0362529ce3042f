"""``python -m hinn_core.fastpath [--jobs N]``: compile the kernels into numba's disk cache
(see `hinn_core.fastpath.precompile`)."""

from hinn_core.fastpath.precompile import main

if __name__ == "__main__":
    main()
