"""dualnet: CS231n-style layers, models and a Solver on NumPy+Cython or CuPy+CUDA.

The flat course names live in `dualnet.layers`; backends in `dualnet.backend`.
"""

from . import backend, layers
from .backend import seed

__version__ = "0.1.0"
__all__ = ["backend", "layers", "seed", "__version__"]
