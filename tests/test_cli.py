"""The `dualnet` command: a shortened default run, resume, folder datasets, and every
user error ending in one line and a non-zero exit status, without a traceback."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dualnet import backend
from dualnet.cli import main

OUTPUTS = ("model.npz", "history.json", "curves.png", "filters.png", "confusion_matrix.png",
           "misclassified.png")


def assert_real_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) >= 150
        pixels = np.asarray(im.convert("L"), dtype=np.float64)
    assert pixels.std() > 10


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """The default command (ConvNet on digits), shortened to 2 epochs on 600 images."""
    out = tmp_path_factory.mktemp("run")
    rc = main(["train", "--epochs", "2", "--num-train", "600", "--out", str(out)])
    return rc, out


def test_short_default_run_writes_every_file(short_run):
    rc, out = short_run
    assert rc == 0
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert (out / "checkpoint_epoch_2.npz").is_file()
    for name in OUTPUTS[2:]:
        assert_real_png(out / name)


def test_short_default_run_learns(short_run):
    _, out = short_run
    history = json.loads((out / "history.json").read_text())
    # chance is 10%; two epochs on 600 digits already get far beyond it
    assert history["test_accuracy"] >= 0.8
    assert len(history["loss_history"]) == 2 * (600 // 32)
    assert history["loss_history"][-1] < history["loss_history"][0]
    assert len(history["val_acc_history"]) == 3  # after iteration 1 and each epoch
    assert history["images_per_second"] > 0
    assert history["arguments"]["model"] == "convnet"


def test_resume_continues_from_the_checkpoint(short_run, tmp_path, capsys):
    _, out = short_run
    rc = main(["train", "--epochs", "3", "--num-train", "600", "--out", str(tmp_path),
               "--resume", str(out / "checkpoint_epoch_2.npz")])
    assert rc == 0
    history = json.loads((tmp_path / "history.json").read_text())
    before = json.loads((out / "history.json").read_text())
    assert len(history["loss_history"]) == 3 * (600 // 32)
    assert history["loss_history"][:10] == before["loss_history"][:10]
    assert "test accuracy:" in capsys.readouterr().out


def test_resume_with_other_settings_is_a_one_line_error(short_run, tmp_path, capsys, one_line_error):
    _, out = short_run
    rc = main(["train", "--model", "fc", "--epochs", "1", "--out", str(tmp_path),
               "--resume", str(out / "checkpoint_epoch_2.npz")])
    assert rc == 1
    one_line_error("does not fit")


def test_summary_names_accuracy_speed_and_files(tmp_path, capsys):
    rc = main(["train", "--model", "two-layer", "--epochs", "1", "--num-train", "320",
               "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "test accuracy:" in out and "images/s" in out
    for name in OUTPUTS:
        assert name in out


def test_folder_dataset_end_to_end(tmp_path, capsys):
    # two classes a network can tell apart: bright top half vs bright bottom half
    rng = np.random.RandomState(0)
    for name, rows in (("top", slice(0, 4)), ("bottom", slice(4, 8))):
        for k in range(30):
            img = rng.randint(0, 60, (8, 8), dtype=np.uint8)
            img[rows] += 150
            (tmp_path / "imgs" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).convert("RGB").save(tmp_path / "imgs" / name / f"{k}.png")
    rc = main(["train", "--dataset", f"folder:{tmp_path / 'imgs'}", "--grayscale",
               "--epochs", "2", "--batch-size", "8", "--lr", "3e-3",
               "--out", str(tmp_path / "out")])
    assert rc == 0
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert history["test_accuracy"] >= 0.8  # 6 test images, 2 classes
    assert (tmp_path / "out" / "confusion_matrix.png").is_file()


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["train", "--model", "resnet"], "unknown model 'resnet'"),
    (["train", "--model", "net.py:"], "unknown model 'net.py:'"),
    (["train", "--backend", "tpu"], "invalid choice: 'tpu'"),
    (["train", "--image-size", "big"], "image size"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_bad_command_line_exits_2(argv, fragment, capsys, one_line_error):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    one_line_error(fragment)


def test_missing_image_folder(tmp_path, capsys, one_line_error):
    rc = main(["train", "--dataset", f"folder:{tmp_path / 'nope'}", "--out", str(tmp_path)])
    assert rc == 1
    one_line_error("does not exist")


def test_missing_data_dir(tmp_path, capsys, one_line_error):
    rc = main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nope"),
               "--out", str(tmp_path)])
    assert rc == 1
    one_line_error("data directory", "does not exist")


def test_cifar_not_there_and_no_download(tmp_path, capsys, one_line_error):
    rc = main(["train", "--dataset", "cifar100", "--data-dir", str(tmp_path),
               "--no-download", "--out", str(tmp_path / "out")])
    assert rc == 1
    one_line_error("cifar-100-python.tar.gz", "by hand")


def test_unwritable_out_dir(tmp_path, capsys, one_line_error):
    (tmp_path / "file").write_text("a file, not a folder")
    rc = main(["train", "--out", str(tmp_path / "file" / "run")])
    assert rc == 1
    one_line_error("cannot write to output directory")


def test_corrupt_checkpoint(tmp_path, capsys, one_line_error):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated zip")
    rc = main(["train", "--epochs", "1", "--out", str(tmp_path), "--resume",
               str(tmp_path / "bad.npz")])
    assert rc == 1
    one_line_error("bad.npz")


def test_missing_checkpoint(tmp_path, capsys, one_line_error):
    rc = main(["train", "--out", str(tmp_path), "--resume", str(tmp_path / "none.npz")])
    assert rc == 1
    one_line_error("does not exist")


def test_unavailable_backend(tmp_path, capsys, one_line_error):
    if backend.why_unavailable("cupy") is None:
        pytest.skip("cupy works here, so it cannot be the unavailable one")
    rc = main(["train", "--backend", "cupy", "--out", str(tmp_path)])
    assert rc == 1
    one_line_error("cupy")


def test_doctor_prints_the_report(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "Backends:" in out and "numpy" in out


def test_console_entry_point_errors_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dualnet.cli", "train", "--out",
                             str(tmp_path), "--dataset", f"folder:{tmp_path / 'x'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("dualnet: error:")


def test_bench_runs_the_suite_with_its_arguments(tmp_path, monkeypatch, capfd):
    (tmp_path / "run_all.py").write_text("import sys\nprint('suite got', sys.argv[1:])\n"
                                         "sys.exit(3)\n")
    monkeypatch.setattr("dualnet.cli._bench_dir", lambda: tmp_path)
    assert main(["bench", "--quick", "x"]) == 3
    assert "suite got ['--quick', 'x']" in capfd.readouterr().out


def test_bench_without_the_suite_is_a_one_line_error(tmp_path, monkeypatch, capsys, one_line_error):
    monkeypatch.setattr("dualnet.cli._bench_dir", lambda: tmp_path / "nowhere")
    assert main(["bench"]) == 1
    one_line_error("run_all.py is missing")


SEQUENTIAL_FILE = """
from dualnet import nn

def build(input_dim, num_classes):
    C, H, W = input_dim
    return nn.Sequential(nn.Conv2d(C, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * (H // 2) * (W // 2), num_classes))

def not_a_model(input_dim, num_classes):
    return 42
"""


def test_train_a_sequential_from_a_user_file(tmp_path, capsys):
    (tmp_path / "mynet.py").write_text(SEQUENTIAL_FILE)
    rc = main(["train", "--model", f"{tmp_path / 'mynet.py'}:build", "--epochs", "6",
               "--num-train", "400", "--out", str(tmp_path / "out")])
    assert rc == 0
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert history["test_accuracy"] >= 0.7  # 10 digit classes: chance is 0.1
    assert_real_png(tmp_path / "out" / "filters.png")
    assert "mynet.py:build (1,370 parameters)" in capsys.readouterr().out


@pytest.mark.parametrize("spec, fragment", [
    ("missing.py:build", "model file missing.py does not exist"),
    ("{dir}/mynet.py:nope", "defines no function 'nope'"),
    ("{dir}/mynet.py:not_a_model", "returned a int, not a model"),
])
def test_bad_user_model_is_a_one_line_error(spec, fragment, tmp_path, capsys, one_line_error):
    (tmp_path / "mynet.py").write_text(SEQUENTIAL_FILE)
    rc = main(["train", "--model", spec.format(dir=tmp_path), "--out", str(tmp_path / "o")])
    assert rc == 1
    one_line_error(fragment)
