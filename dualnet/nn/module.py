"""`Module`, the containers `Sequential`, `Residual` (adds two branches) and `Gate`
(multiplies them), and the live parameter view.

Names: every parameter and buffer has a dotted name, PyTorch-style: a leaf's own names are
`weight`, `bias` (and `running_mean`, `running_var` buffers); a container prefixes its
children's names with the child's index (`"0.weight"`, `"3.bias"`) or, for a `Sequential`
built from keyword arguments, with the child's name (`"conv1.weight"`).

Weights keep the functional layers' layouts (`Linear.weight` is (in, out) like
`affine_forward`'s w, not PyTorch's (out, in)), so both APIs share parameters unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

import numpy as np

from .. import backend, numerics
from .._threads import blas_one_thread
from ..models.base import _l2


class Module:
    """A layer object: `forward(x)` caches what `backward(dout)` needs.

    `backward` returns the input gradient and stores parameter gradients in `self.grads`
    under the same names as `self.params`. Leaves keep their arrays in `_params`,
    `_grads`, `_buffers`; containers gather their children's under dotted names.
    """

    #: Names of this module's own parameters that L2 regularization applies to.
    decayed: tuple[str, ...] = ()
    #: A `Sequential` runs a module that `absorbs_relu` and a following module that
    #: `is_relu` as one: `forward_relu(x)` (the ReLU in the module's own pass), the ReLU
    #: module skipped both ways (the absorbing module's backward applies its mask).
    absorbs_relu = False
    is_relu = False

    def __init__(self):
        self._params: dict = {}
        self._grads: dict = {}
        self._buffers: dict = {}
        self.training = True

    # -- the two passes ------------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    # -- structure ---------------------------------------------------------------------
    def children(self) -> list[tuple[str, Module]]:
        """(name, child) pairs of a container; a leaf has none."""
        return []

    def _named(self, kind: str) -> Iterator[tuple[str, object]]:
        yield from getattr(self, kind).items()
        for prefix, child in self.children():
            for name, value in child._named(kind):
                yield f"{prefix}.{name}", value

    def _owner(self, name: str) -> tuple[Module, str]:
        """The leaf holding the dotted `name`, and the name inside it."""
        module = self
        while "." in name:
            prefix, name = name.split(".", 1)
            module = dict(module.children())[prefix]
        return module, name

    @property
    def params(self) -> _ParameterView:
        """Live dict of every parameter: assigning `params[name] = w` updates the module."""
        return _ParameterView(self)

    @params.setter
    def params(self, new: dict) -> None:
        # The course Solver swaps in its best parameters with `model.params = best_params`.
        for name, value in new.items():
            self.params[name] = value

    @property
    def grads(self) -> dict:
        """Gradients from the last `backward`, keyed like `params`."""
        return dict(self._named("_grads"))

    def regularized(self) -> list[str]:
        """Names of the parameters L2 regularization applies to (weights, never biases,
        nor normalization scales), as in the course models."""
        names = [name for name in self._params if name in self.decayed]
        for prefix, child in self.children():
            names += [f"{prefix}.{name}" for name in child.regularized()]
        return names

    @property
    def bn_params(self) -> list[dict]:
        """The live running-statistics dicts of every batchnorm layer, in order.

        This is the course models' `bn_params` contract, which the Solver checkpoints and
        restores in place, so a Sequential resumes with its running statistics.
        """
        own = [self._buffers] if self._buffers else []
        return own + [p for _, child in self.children() for p in child.bn_params]

    def parameters(self) -> list[tuple[str, object]]:
        """(name, array) for every parameter, in a stable order."""
        return list(self._named("_params"))

    def num_params(self) -> int:
        """Total number of scalar parameters."""
        return sum(int(np.prod(p.shape)) for _, p in self.parameters())

    # -- modes and devices ---------------------------------------------------------------
    @property
    def backend(self):
        """The Backend holding this module's parameters (the default one if it has none)."""
        return backend.of(*(p for _, p in self.parameters()))

    @property
    def dtype(self):
        """The dtype of the first parameter (None for a module without parameters)."""
        first = next(iter(self.parameters()), None)
        return None if first is None else first[1].dtype

    def train(self, mode: bool = True) -> Module:
        """Training mode: batch statistics for batchnorm, random masks for dropout."""
        self.training = mode
        for _, child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode: running statistics, no dropout."""
        return self.train(False)

    def to(self, name: str) -> Module:
        """Move every parameter and buffer to backend `name` (an explicit copy)."""
        target = backend.get(name)
        for kind in ("_params", "_buffers"):
            for full_name, value in list(self._named(kind)):
                owner, leaf_name = self._owner(full_name)
                source = backend.of(value)
                if source is not target:
                    getattr(owner, kind)[leaf_name] = target.asarray(source.to_numpy(value))
        return self

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of every parameter and buffer, by dotted name."""
        return {name: backend.of(v).to_numpy(v).copy()
                for kind in ("_params", "_buffers") for name, v in self._named(kind)}

    def load_state_dict(self, state: dict) -> None:
        """Load arrays saved by `state_dict`; names and shapes must match exactly."""
        expected = {name: v for kind in ("_params", "_buffers") for name, v in self._named(kind)}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing keys {missing}, "
                           f"unexpected keys {unexpected}")
        for name, current in expected.items():
            value = np.asarray(state[name])
            if value.shape != current.shape:
                raise ValueError(f"{type(self).__name__}.load_state_dict: {name} has shape "
                                 f"{value.shape}, the module expects {current.shape}")
            owner, leaf_name = self._owner(name)
            kind = "_params" if leaf_name in owner._params else "_buffers"
            getattr(owner, kind)[leaf_name] = backend.of(current).asarray(value,
                                                                          dtype=current.dtype)

    def __repr__(self):
        inner = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self._params.items())
        return f"{type(self).__name__}({inner})"


class _ParameterView(MutableMapping):
    """A dict-like window on a module tree's parameters (reads and writes go to the leaves)."""

    def __init__(self, module: Module):
        self._module = module

    def __getitem__(self, name):
        owner, leaf_name = self._lookup(name)
        return owner._params[leaf_name]

    def __setitem__(self, name, value):
        owner, leaf_name = self._lookup(name)
        owner._params[leaf_name] = value

    def __delitem__(self, name):
        raise TypeError("parameters cannot be deleted from a module")

    def __iter__(self):
        return (name for name, _ in self._module._named("_params"))

    def __len__(self):
        return sum(1 for _ in self)

    def _lookup(self, name):
        try:
            owner, leaf_name = self._module._owner(name)
        except KeyError:
            owner, leaf_name = None, None
        if owner is None or leaf_name not in owner._params:
            raise KeyError(f"{type(self._module).__name__} has no parameter {name!r}")
        return owner, leaf_name


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse.

    `Sequential(m1, m2, ...)` names children "0", "1", ...; `Sequential(conv1=m1, ...)`
    uses the keyword names. As a model for `Solver`, `loss(X, y)` applies `criterion`
    (softmax cross-entropy by default) and L2 regularization `0.5 * reg * sum(W**2)` on
    the `Linear` and `Conv2d` weights (see `Module.regularized`).
    """

    def __init__(self, *modules: Module, criterion=None, reg: float = 0.0, **named: Module):
        super().__init__()
        if modules and named:
            raise ValueError("Sequential: give modules either by position or by name, not both")
        pairs = list(named.items()) if named else [(str(i), m) for i, m in enumerate(modules)]
        for name, module in pairs:
            if not isinstance(module, Module):
                raise TypeError(f"Sequential: child {name!r} is a {type(module).__name__}, "
                                "not a dualnet.nn.Module")
        self._children = pairs
        if criterion is None:
            from .losses import CrossEntropyLoss

            criterion = CrossEntropyLoss()
        self.criterion = criterion
        self.reg = reg
        self._absorbed = set()  # indices of ReLUs the last forward ran inside the child before

    def children(self):
        return list(self._children)

    def __getitem__(self, index: int) -> Module:
        return self._children[index][1]

    def __len__(self):
        return len(self._children)

    def forward(self, x):
        """The children in order. A child that `absorbs_relu` followed by a ReLU runs both in
        one pass (`forward_relu`), except in debug mode, where each child's output is checked."""
        children = self._children
        self._absorbed = set()
        if numerics.enabled():
            numerics.enter(type(self).__name__, x, "input x")
            for name, module in children:
                x = numerics.watched(name, module, "forward", x)
            return x
        i = 0
        while i < len(children):
            module = children[i][1]
            if module.absorbs_relu and i + 1 < len(children) and children[i + 1][1].is_relu:
                x = module.forward_relu(x)
                self._absorbed.add(i + 1)
                i += 2
            else:
                x = module.forward(x)
                i += 1
        return x

    def backward(self, dout):
        debug = numerics.enabled()
        if debug:
            numerics.enter(type(self).__name__, dout, "upstream gradient dout")
        for i in reversed(range(len(self._children))):
            if i in self._absorbed:  # the child before it masks dout in its own backward
                continue
            name, module = self._children[i]
            dout = (numerics.watched(name, module, "backward", dout) if debug
                    else module.backward(dout))
        return dout

    def loss(self, X, y=None):
        """Course model contract: scores when y is None, else (loss, grads keyed like params).

        The mode follows the call, as in the course models: evaluation without labels,
        training with them.
        """
        self.train(y is not None)
        with blas_one_thread():  # once for every layer's products (dualnet._threads)
            scores = self.forward(X)
            if y is None:
                return scores
            loss = self.criterion.forward(scores, y)
            self.backward(self.criterion.backward())
        grads = self.grads
        if self.reg:
            params = self.params
            for name in self.regularized():
                loss, grads[name] = _l2(loss, grads[name], params[name], float(self.reg))
        return loss, grads

    def __repr__(self):
        inner = "\n".join(f"  ({name}): {module!r}" for name, module in self._children)
        return f"Sequential(\n{inner}\n)"


def _apply(name: str, branch: Module | None, x):
    """A branch's forward pass (checked in debug mode under its child name); None is the
    identity."""
    if branch is None:
        return x
    return numerics.watched(name, branch, "forward", x) if numerics.enabled() else \
        branch.forward(x)


def _back(name: str, branch: Module | None, dout):
    """A branch's backward pass, like `_apply`."""
    if branch is None:
        return dout
    return numerics.watched(name, branch, "backward", dout) if numerics.enabled() else \
        branch.backward(dout)


def _enter(owner: Module, value, what: str) -> None:
    """Debug mode: check a branching container's input before its branches run."""
    if numerics.enabled():
        numerics.enter(type(owner).__name__, value, what)


def _check_branch(owner: str, name: str, branch, optional: bool) -> None:
    if (branch is None and optional) or isinstance(branch, Module):
        return
    allowed = "a dualnet.nn.Module or None" if optional else "a dualnet.nn.Module"
    raise TypeError(f"{owner}: {name} must be {allowed}, got {type(branch).__name__}")


class Residual(Module):
    """out = body(x) + shortcut(x); the shortcut is the identity when None.

    Without a shortcut the body must keep x's shape; a shortcut (e.g. a strided 1x1
    convolution) projects x to the body's output shape. Backward runs through both branches
    and adds their input gradients. Children: "body", and "shortcut" when given.
    """

    def __init__(self, body: Module, shortcut: Module | None = None):
        super().__init__()
        _check_branch("Residual", "body", body, optional=False)
        _check_branch("Residual", "shortcut", shortcut, optional=True)
        self.body, self.shortcut = body, shortcut

    def children(self):
        named = [("body", self.body), ("shortcut", self.shortcut)]
        return [(name, child) for name, child in named if child is not None]

    def forward(self, x):
        _enter(self, x, "input x")
        out = _apply("body", self.body, x)
        skip = _apply("shortcut", self.shortcut, x)
        if out.shape != skip.shape:
            if self.shortcut is None:
                raise ValueError(f"Residual: body maps {tuple(x.shape)} to {tuple(out.shape)};"
                                 " without a shortcut a residual block must keep the shape "
                                 "(give shortcut= to project x)")
            raise ValueError(f"Residual: body maps {tuple(x.shape)} to {tuple(out.shape)} but "
                             f"the shortcut maps it to {tuple(skip.shape)}; they must agree")
        return out + skip

    def backward(self, dout):
        _enter(self, dout, "upstream gradient dout")
        return _back("body", self.body, dout) + _back("shortcut", self.shortcut, dout)


class Gate(Module):
    """out = body(x) * gate(x): one branch's output scales another's (gates, attention).

    gate: a Module whose output broadcasts over the body's output, axis by axis from the
        left, with 1 or a missing trailing axis where it is shared: for a body output
        (N, C, H, W), a gate output (N, C) or (N, C, 1, 1) scales each channel of each
        sample, (N, 1, H, W) each position, (N, C, H, W) each element.
    body: a Module, or None for the identity (out = x * gate(x), as in squeeze-excitation).
    Backward runs through both branches and adds their input gradients; the gate's gradient
    is summed over the axes it was broadcast along. Children: "body" when given, "gate".
    """

    def __init__(self, gate: Module, body: Module | None = None):
        super().__init__()
        _check_branch("Gate", "gate", gate, optional=False)
        _check_branch("Gate", "body", body, optional=True)
        self.gate, self.body = gate, body

    def children(self):
        named = [("body", self.body), ("gate", self.gate)]
        return [(name, child) for name, child in named if child is not None]

    def forward(self, x):
        _enter(self, x, "input x")
        value = _apply("body", self.body, x)
        g = _apply("gate", self.gate, x)
        self._value, self._gate_shape = value, g.shape
        self._g = g.reshape(self._aligned(g.shape, value.shape))
        return value * self._g

    def backward(self, dout):
        value, g = self._value, self._g
        shared = tuple(axis for axis, (n, m) in enumerate(zip(g.shape, value.shape, strict=True))
                       if n == 1 and m != 1)
        dg = (dout * value).sum(axis=shared, keepdims=True).reshape(self._gate_shape)
        return _back("body", self.body, dout * g) + _back("gate", self.gate, dg)

    @staticmethod
    def _aligned(gate_shape, value_shape):
        """gate_shape padded with trailing 1s to value_shape's length, checked to broadcast."""
        padded = tuple(gate_shape) + (1,) * (len(value_shape) - len(gate_shape))
        if len(padded) != len(value_shape) or any(
                n not in (1, m) for n, m in zip(padded, value_shape, strict=True)):
            raise ValueError(f"Gate: the gate's output {tuple(gate_shape)} does not broadcast "
                             f"over the body's output {tuple(value_shape)}; it must match it "
                             "axis by axis from the left, with 1 or a missing trailing axis "
                             "where it is shared")
        return padded
