"""examples/colab_cifar10.ipynb: a valid notebook that installs in one cell without touching
CuPy, and whose code trains end to end on `cuda-emu` (CIFAR-10 replaced by a tiny random
stand-in of the same shapes, since tests do not download).
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from dualnet import backend

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "colab_cifar10.ipynb"


@pytest.fixture(scope="module")
def notebook():
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def _source(cell):
    return "".join(cell["source"])


def test_is_an_nbformat_4_notebook_without_outputs(notebook):
    assert notebook["nbformat"] == 4 and notebook["nbformat_minor"] >= 5
    ids = [cell["id"] for cell in notebook["cells"]]
    assert len(set(ids)) == len(ids)
    for cell in notebook["cells"]:
        assert cell["cell_type"] in ("markdown", "code")
        assert isinstance(cell["source"], list) and isinstance(cell["metadata"], dict)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def test_installs_from_the_repository_in_one_cell_and_leaves_cupy_alone(notebook):
    installs = [c for c in notebook["cells"] if re.search(r"^\s*[%!]pip install", _source(c),
                                                          re.MULTILINE)]
    assert len(installs) == 1
    assert "git+" in _source(installs[0])
    assert not any("cupy" in line.lower() for c in notebook["cells"]
                   for line in c["source"] if "pip" in line)


def _fake_cifar10(num_training=49000, **_):
    rng = np.random.default_rng(0)

    def images(n):
        return rng.standard_normal((n, 3, 32, 32)).astype(np.float32)

    return {"X_train": images(num_training), "y_train": rng.integers(0, 10, num_training),
            "X_val": images(8), "y_val": rng.integers(0, 10, 8),
            "X_test": images(8), "y_test": rng.integers(0, 10, 8),
            "class_names": [f"class {i}" for i in range(10)]}


def test_trains_on_cuda_emu(notebook, emu, monkeypatch, capsys):
    import matplotlib

    matplotlib.use("Agg")
    import dualnet.data

    monkeypatch.setattr(dualnet.data, "get_CIFAR10_data", _fake_cifar10)
    monkeypatch.setattr(backend, "_default", backend._default)  # the notebook calls use()
    namespace = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code" or cell["id"] == "install":
            continue
        exec(compile(_source(cell), f"notebook cell {cell['id']}", "exec"), namespace)
        if cell["id"] == "parameters":
            namespace.update(BACKEND="cuda-emu", NUM_TRAIN=16, NUM_EPOCHS=1, BATCH_SIZE=8)
    assert namespace["model"].backend is emu
    assert namespace["solver"].iteration == 2
    assert re.search(r"16 training images in [\d.]+ s: [\d,]+ images/s on cuda-emu",
                     capsys.readouterr().out)
