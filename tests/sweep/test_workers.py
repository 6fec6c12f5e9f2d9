"""Worker processes: a worker's error ends the sweep in one line naming the worker."""

import pytest

from dualnet.data import get_digits_data
from dualnet.sweep import Sweep
from dualnet.sweep.workers import cores

BROKEN_MODEL = """
def build(input_dim, num_classes, width=8):
    raise ValueError(f"no model of width {width} today")
"""


def test_cores_counts_this_process_cores():
    assert cores() >= 1


def test_a_worker_error_ends_the_sweep_in_one_line(tmp_path):
    source = tmp_path / "broken.py"
    source.write_text(BROKEN_MODEL)
    # the workers load the model file and the data themselves ('spawn' processes)
    sweep = Sweep(f"{source}:build", get_digits_data, {"width": [8, 16]}, trials=2,
                  epochs=1, workers=2, storage=tmp_path / "s.journal", progress=False)
    with pytest.raises(RuntimeError, match=r"^Sweep: worker [01]: ValueError: no model of "
                                           r"width (8|16) today$"):
        sweep.run()
    assert sweep.threads == max(1, cores() // 2)
