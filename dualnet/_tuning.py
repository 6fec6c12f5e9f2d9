"""Process-level settings that make the host backends fast on small machines.

Applied once, when `dualnet` is imported; `DUALNET_NO_TUNING=1` skips them all. Each one is
a default: a value the user already set wins.

- libgomp's idle OpenMP threads spin for a long while after each kernel (300,000 rounds by
  default), stealing the core that the work after it needs (measured on 2 cores, when
  OpenBLAS still ran its own threads: a conv forward+backward 2-10x slower).
  `OMP_WAIT_POLICY=PASSIVE` lets them sleep. Sleeping outright costs a wake-up per kernel,
  though, and waking a sleeping core of a virtual machine took 100-300 us here: one-image
  ThreeLayerConvNet inference, four small kernels, took 0.9-1.6 ms passive against
  0.38-0.47 ms with `GOMP_SPINCOUNT=10000` (a spin of about 0.2 ms, which lets the next
  kernel of the same layer or step find its threads awake), training steps the same or
  faster. So both are set, unless the user set either (or GOMP_SPINCOUNT) already.
  libgomp reads them when it is loaded, with the Cython extension, after this module runs
  (unless something loaded it before dualnet). The variables stay set in `os.environ`, so
  OpenMP runtimes loaded later (PyTorch's) and child processes see them too.
- glibc returns freed memory above 128 KiB (dynamically up to 32 MiB) to the system at once,
  so every large activation array of the next step faults its pages in again, zero-filled:
  measured 25-30% of a ThreeLayerConvNet training step at batch 128. Keeping freed heap
  memory for reuse (mmap threshold 32 MiB, trim threshold 256 MiB) removes that, at the cost
  of a process that holds on to up to 256 MiB it no longer uses.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 256 * 2**20
#: Rounds an idle libgomp thread spins before it sleeps (GOMP_SPINCOUNT; see above).
SPINCOUNT = 10_000


def apply() -> list[str]:
    """Apply the settings above; returns a line for each one now in force (for `doctor`)."""
    if os.environ.get("DUALNET_NO_TUNING"):
        return []
    late = (" (not in effect: libgomp was loaded before dualnet)" if _libgomp_loaded()
            else "")
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ.update(OMP_WAIT_POLICY="PASSIVE", GOMP_SPINCOUNT=str(SPINCOUNT))
    waiting = [f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
               if k in os.environ]
    applied = [" ".join(waiting) + late]
    if _keep_freed_memory():
        applied.append(f"glibc malloc keeps freed memory (mmap threshold "
                       f"{MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB)")
    return applied


def _libgomp_loaded() -> bool:
    """Whether the system's GNU OpenMP (libgomp.so, which the kernels built from source link)
    is in this process already: it read OMP_WAIT_POLICY when it loaded. Wheels' renamed
    copies (torch's libgomp-<hash>.so) are other runtimes. False where it cannot tell."""
    try:
        with open("/proc/self/maps") as maps:
            return any("/libgomp.so" in line for line in maps)
    except OSError:
        return False


def _keep_freed_memory() -> bool:
    """mallopt on glibc (Linux); False elsewhere or when the user tuned malloc already."""
    if not sys.platform.startswith("linux"):
        return False
    if any(k.startswith(("MALLOC_", "GLIBC_TUNABLES")) for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                    and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator alone
        return False


APPLIED = apply()
