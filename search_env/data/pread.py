"""Reading files on disk by position (``pread``) rather than through a memory map: bytes, and slices of the 1-d
arrays of ``.npy`` files.

A page fault on a map also maps ~64 KB around it (fault-around), so random reads through a map of a large file put
shared pages in every process's RSS; a positional read leaves only the page cache's one copy. Positional reads need
no seek, so threads and forked processes can share one open file.
"""

from __future__ import annotations

import os
import threading

import numpy as np

__all__ = ["npy_layout", "pread", "pread_array"]

_seek_lock = threading.Lock()


def pread(file, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset`` of the open (unbuffered) ``file``."""
    if hasattr(os, "pread"):
        return os.pread(file.fileno(), size, offset)
    with _seek_lock:  # Windows: no pread
        file.seek(offset)
        return file.read(size)


def npy_layout(path: str | os.PathLike) -> tuple[np.dtype, int, int]:
    """``(dtype, length, offset of the data)`` of the 1-d array in the ``.npy`` file ``path``."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = {1: np.lib.format.read_array_header_1_0, 2: np.lib.format.read_array_header_2_0}.get(major)
        if read_header is None:
            raise ValueError(f"{path} is a .npy of version {major}, not 1 or 2")
        shape, fortran, dtype = read_header(f)
        if fortran or len(shape) != 1:
            raise ValueError(f"{path} does not hold a 1-d array")
        return dtype, shape[0], f.tell()


def pread_array(file, dtype: np.dtype, offset: int, start: int, stop: int) -> np.ndarray:
    """Items ``start:stop`` of the array of ``dtype`` stored at ``offset`` in the open ``file``, read (not mapped)."""
    return np.frombuffer(pread(file, (stop - start) * dtype.itemsize, offset + start * dtype.itemsize), dtype=dtype)
