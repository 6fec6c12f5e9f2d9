"""dualnet.vis: the course grid function exactly, and PNGs that are real, non-blank images."""

import json

import numpy as np
import pytest
from PIL import Image

from dualnet import vis


def assert_png_with_content(path, min_size=(150, 150)):
    """A decodable PNG of at least `min_size` whose pixels are not all alike."""
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        pixels = np.asarray(im.convert("L"), dtype=np.float64)
    assert pixels.std() > 10, "image is (nearly) blank"
    assert len(np.unique(pixels)) > 20


def test_visualize_grid_layout_and_rescaling():
    Xs = np.zeros((5, 2, 3, 1))
    for n in range(5):
        Xs[n, :, :, 0] = np.arange(6).reshape(2, 3) * (n + 1) - 7  # ranges differ per image
    grid = vis.visualize_grid(Xs, ubound=255.0, padding=1)
    # ceil(sqrt(5)) = 3 cells a side: 3*2 + 2 rows, 3*3 + 2 columns
    assert grid.shape == (8, 11, 1)
    expected_tile = np.arange(6).reshape(2, 3) * 51.0  # every image rescaled to [0, 255]
    for n in range(5):
        r, c = divmod(n, 3)
        np.testing.assert_allclose(grid[3 * r:3 * r + 2, 4 * c:4 * c + 3, 0], expected_tile)
    assert (grid[2, :, 0] == 0).all() and (grid[:, 3, 0] == 0).all()   # padding
    assert (grid[3:5, 8:11] == 0).all()                                 # empty cell


def test_visualize_grid_constant_image_is_not_nan():
    grid = vis.visualize_grid(np.ones((1, 2, 2, 3)))
    assert np.isfinite(grid).all()


def test_plot_filters_png(tmp_path):
    rng = np.random.RandomState(0)
    W = rng.randn(16, 3, 5, 5).astype(np.float32)
    vis.plot_filters(W, tmp_path / "filters.png")
    assert_png_with_content(tmp_path / "filters.png")
    vis.plot_filters(rng.randn(8, 1, 3, 3), tmp_path / "gray.png")
    assert_png_with_content(tmp_path / "gray.png")
    with pytest.raises(ValueError, match="F, C, HH, WW"):
        vis.plot_filters(W[0], tmp_path / "x.png")


def _history(seed, epochs=5, iters_per_epoch=20):
    rng = np.random.RandomState(seed)
    t = np.arange(epochs * iters_per_epoch)
    return {"loss_history": list(2.3 * np.exp(-t / 30) + 0.1 * rng.rand(len(t))),
            "train_acc_history": list(np.linspace(0.3, 0.95, epochs)),
            "val_acc_history": list(np.linspace(0.25, 0.9, epochs))}


class _FakeSolver:
    def __init__(self, history):
        self.__dict__.update(history)


def test_training_curves_from_solver_json_and_several_runs(tmp_path):
    vis.plot_training_curves(_FakeSolver(_history(0)), tmp_path / "one.png")
    assert_png_with_content(tmp_path / "one.png", min_size=(600, 250))
    (tmp_path / "history.json").write_text(json.dumps(_history(1)))
    from_json = json.loads((tmp_path / "history.json").read_text())
    fig = vis.plot_training_curves({"sgd": _FakeSolver(_history(2)), "adam": from_json},
                                   tmp_path / "compare.png", title="update rules")
    assert_png_with_content(tmp_path / "compare.png", min_size=(600, 250))
    labels = fig.axes[1].get_legend_handles_labels()[1]
    assert labels == ["sgd train", "sgd val", "adam train", "adam val"]


def test_confusion_matrix_counts():
    y_true = np.array([0, 0, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 2, 0, 2])
    np.testing.assert_array_equal(vis.confusion_matrix(y_true, y_pred, 3),
                                  [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    with pytest.raises(ValueError, match="outside"):
        vis.confusion_matrix(y_true, y_pred + 1, 3)


def test_confusion_matrix_png_with_class_names(tmp_path):
    rng = np.random.RandomState(0)
    y = rng.randint(0, 10, 300)
    pred = np.where(rng.rand(300) < 0.8, y, rng.randint(0, 10, 300))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
             "ship", "truck"]
    fig = vis.plot_confusion_matrix(y, pred, names, tmp_path / "cm.png")
    assert_png_with_content(tmp_path / "cm.png", min_size=(300, 300))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == names


def test_misclassified_png(tmp_path):
    rng = np.random.RandomState(0)
    X = rng.randn(40, 1, 8, 8)
    y = rng.randint(0, 10, 40)
    pred = (y + (rng.rand(40) < 0.5)) % 10
    fig = vis.plot_misclassified(X, y, pred, [str(d) for d in range(10)],
                                 tmp_path / "wrong.png", max_images=9)
    assert_png_with_content(tmp_path / "wrong.png", min_size=(200, 200))
    labels = [t.get_text() for t in fig.axes[0].texts]
    wrong = np.flatnonzero(y != pred)[:9]
    assert labels == [f"{y[n]} -> {pred[n]}" for n in wrong]


def test_misclassified_when_nothing_is_wrong(tmp_path):
    y = np.arange(4)
    fig = vis.plot_misclassified(np.zeros((4, 3, 4, 4)), y, y, list("abcd"),
                                 tmp_path / "none.png")
    assert "no misclassified" in fig.axes[0].get_title()
    assert (tmp_path / "none.png").is_file()
