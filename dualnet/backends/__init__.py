"""The backends: one module each, registered with `dualnet.backend` when imported here.

=============  ==========================================================================
module         holds
=============  ==========================================================================
base           `Backend`: the contract, with portable pure-`xp` kernels and convolution
conv           the face of convolution algorithms, their settings and the portable one
numpy          `NumpyBackend` and its rule for choosing a convolution algorithm
host_im2col    the numpy backend's im2col algorithms (chunked, output pairs, fused)
host_winograd  the numpy backend's Winograd algorithms (chunked, fused)
scratch        reusable per-thread host scratch memory for those algorithms
launch         `ConvKernelBackend`: launch code for conv.cu shared by cupy and cuda-emu
cupy           `CupyBackend`: conv.cu through cupy.RawModule
emu            `EmuBackend`: conv.cu compiled for the CPU (`cuda-emu`)
=============  ==========================================================================

Device code and its loaders stay in `dualnet.kernels`; layers reach all of this only
through `dualnet.backend.of(...)` and the backend's methods.
"""

# The import order is the order `backend.names()` lists them in.
from . import numpy, cupy, emu  # noqa: I001
