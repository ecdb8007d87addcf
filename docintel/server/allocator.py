"""glibc malloc tunables for the server process, so memory freed after a burst goes back.

glibc serves a request of at least M_MMAP_THRESHOLD bytes (128 KB at start)
with its own mmap, returned to the system on free. But the threshold is
dynamic: freeing such a block raises it to that block's size (up to 32 MB), so
after one 4 MB text was freed, every later buffer under 4 MB comes from a
malloc arena, and an arena gives memory back only from its top. Each executor
thread gets its own arena, so the freed buffers of a burst of uploads stayed
resident: measured (bench/memory.py, 20 concurrent 10 MB uploads, with text
already read in 64 KB chunks) +13 to +14 MB after the burst, never given back.

Setting either threshold explicitly turns the dynamic adjustment off. Fixed at
glibc's own starting values, the same burst left +2 to +4 MB (like running
with MALLOC_TRIM_THRESHOLD_=131072), at no measurable cost in throughput (200
small text documents through the pipeline: 39-47 docs/s tuned, 37-42 not): the
blocks above 128 KB here are a handful per document, not per request.

The variables users set for glibc (MALLOC_*_, GLIBC_TUNABLES) win: if any is
set, nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Mapping

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 128 * 1024  # glibc's default start value for both


def tune_allocator() -> bool:
    """Fix glibc's trim and mmap thresholds for this process; True if it did."""
    if not sys.platform.startswith("linux") or _user_tuned(os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt to speak of)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done: bool = mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES) == 1
    done = mallopt(M_TRIM_THRESHOLD, THRESHOLD_BYTES) == 1 and done
    log.debug("malloc thresholds fixed at %d bytes: %s", THRESHOLD_BYTES, done)
    return done


def _user_tuned(environ: Mapping[str, str]) -> bool:
    return "GLIBC_TUNABLES" in environ or any(
        name.startswith("MALLOC_") and name.endswith("_") for name in environ
    )
