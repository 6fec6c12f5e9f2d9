"""dualnet: CS231n-style layers, models and a Solver on NumPy+Cython or CuPy+CUDA.

The flat course names live in `dualnet.layers`; the backend registry in `dualnet.backend`
(the backends themselves in `dualnet.backends`); models in
`dualnet.models`, update rules in `dualnet.optim`, and the training loop is `Solver`.
`with dualnet.debug():` checks every layer's outputs and gradients for NaN/inf
(`dualnet.numerics`).
"""

# _tuning comes first: OMP_WAIT_POLICY must be set before the kernels load libgomp.
from . import _tuning, backend, backends, layers, models, optim
from .backend import seed
from .numerics import debug
from .solver import Solver

__version__ = "0.1.0"
__all__ = ["backend", "debug", "layers", "models", "optim", "seed", "Solver", "__version__"]
