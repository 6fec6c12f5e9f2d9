"""dualnet: CS231n-style layers, models and a Solver on NumPy+Cython or CuPy+CUDA.

The flat course names live in `dualnet.layers`; backends in `dualnet.backend`; models in
`dualnet.models`, update rules in `dualnet.optim`, and the training loop is `Solver`.
"""

import os

# OpenBLAS's worker threads spin for ~0.1 s after every GEMM; on a 2-core machine that spin
# takes the core the next OpenMP kernel (im2col, pooling) needs, which then runs at
# single-thread speed. A short timeout lets them sleep: measured 12-23% faster conv and
# training steps. OpenBLAS reads it when NumPy first loads, so it only takes effect when
# dualnet is imported before numpy; a value the user set is kept.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import backend, layers, models, optim  # noqa: E402  (after the environment is set)
from .backend import seed  # noqa: E402
from .solver import Solver  # noqa: E402

__version__ = "0.1.0"
__all__ = ["backend", "layers", "models", "optim", "seed", "Solver", "__version__"]
