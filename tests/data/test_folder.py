"""ImageFolder on generated images: both layouts, lazy minibatches, grayscale, resize."""

import numpy as np
import pytest
from PIL import Image

from dualnet.data import ImageFolder


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def class_folders(tmp_path):
    """root/{cat,dog}/k.png: 3 cats and 2 dogs, 6x5 RGB, pixel (0, 0) red = 10*label+k."""
    root = tmp_path / "imgs"
    for label, name, n in ((0, "cat", 3), (1, "dog", 2)):
        for k in range(n):
            img = np.zeros((6, 5, 3), np.uint8)
            img[0, 0, 0] = 10 * label + k
            img[5, 4] = (255, 128, 0)
            _save(root / name / f"{k}.png", img)
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_class_folders_layout(class_folders):
    ds = ImageFolder(class_folders)
    assert ds.class_names == ["cat", "dog"] and len(ds) == 5
    np.testing.assert_array_equal(ds.labels, [0, 0, 0, 1, 1])
    X, y = ds.load()
    assert X.shape == (5, 3, 6, 5) and X.dtype == np.float32
    # pixel values survive decoding, scaled to [0, 1], in (C, H, W) order
    np.testing.assert_allclose(X[:, 0, 0, 0] * 255, 10 * y + [0, 1, 2, 0, 1], atol=1e-4)
    np.testing.assert_allclose(X[0, :, 5, 4], [1.0, 128 / 255, 0.0], atol=1e-6)


def test_grayscale_and_resize(class_folders):
    ds = ImageFolder(class_folders, grayscale=True, size=(4, 8))
    X, _ = ds.load([0, 4])
    assert X.shape == (2, 1, 4, 8)
    assert ImageFolder(class_folders, size=3).load([1])[0].shape == (1, 3, 3, 3)


def test_labels_file_layout_with_names_and_ints(tmp_path):
    for k in range(4):
        _save(tmp_path / "eyes" / f"e{k}.png", np.full((4, 4), 60 * k, np.uint8))
    (tmp_path / "labels.csv").write_text("# file,label\ne0.png,open\ne1.png,closed\n\n"
                                         "e2.png,open\ne3.png,open\n")
    ds = ImageFolder(tmp_path / "eyes", labels_file=tmp_path / "labels.csv", grayscale=True)
    assert ds.class_names == ["closed", "open"]
    np.testing.assert_array_equal(ds.labels, [1, 0, 1, 1])
    (tmp_path / "ints.txt").write_text("e3.png 2\ne0.png 0\n")
    ds = ImageFolder(tmp_path / "eyes", labels_file=tmp_path / "ints.txt", grayscale=True)
    assert ds.class_names == ["0", "1", "2"]
    X, y = ds.load()
    np.testing.assert_array_equal(y, [2, 0])
    np.testing.assert_allclose(X[:, 0, 0, 0] * 255, [180, 0], atol=1e-4)


def test_batches_cover_every_image_once_per_epoch_and_reshuffle(class_folders):
    loader = ImageFolder(class_folders).batches(2, seed=3)
    assert len(loader) == 3
    epochs = []
    for _ in range(2):
        batches = list(loader)
        assert [len(yb) for _, yb in batches] == [2, 2, 1]
        assert all(Xb.shape[1:] == (3, 6, 5) for Xb, _ in batches)
        # each image identified by its (label, k) pixel
        ids = np.concatenate([Xb[:, 0, 0, 0] for Xb, _ in batches]) * 255
        assert sorted(np.round(ids)) == [0, 1, 2, 10, 11]
        epochs.append(np.round(ids))
    assert not np.array_equal(epochs[0], epochs[1])
    assert len(ImageFolder(class_folders).batches(2, drop_last=True)) == 2


def test_batches_are_decoded_lazily(class_folders, monkeypatch):
    ds = ImageFolder(class_folders)
    reads = []
    original = ImageFolder._read
    monkeypatch.setattr(ImageFolder, "_read", lambda self, p: reads.append(p) or original(self, p))
    it = iter(ds.batches(2, shuffle=False))
    assert reads == []
    next(it)
    assert len(reads) == 2


def test_split_is_deterministic_and_disjoint(class_folders):
    ds = ImageFolder(class_folders)
    train, val, test = ds.split(num_validation=1, num_test=1, seed=0)
    assert (len(train), len(val), len(test)) == (3, 1, 1)
    names = [str(p) for part in (train, val, test) for p in part.paths]
    assert sorted(names) == sorted(str(p) for p in ds.paths)
    assert ds.split(1, 1, seed=0)[1].paths == val.paths
    with pytest.raises(ValueError, match="out of 5"):
        ds.split(3, 2)


def test_mixed_sizes_need_resize(tmp_path):
    _save(tmp_path / "a" / "big.png", np.zeros((8, 8, 3), np.uint8))
    _save(tmp_path / "a" / "small.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="pass size="):
        ImageFolder(tmp_path).load()
    assert ImageFolder(tmp_path, size=4).load()[0].shape == (2, 3, 4, 4)


def test_errors_name_the_problem(tmp_path, class_folders):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolder(tmp_path / "empty")
    (class_folders / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot decode image .*broken.png"):
        ImageFolder(class_folders).load()
    (tmp_path / "bad.txt").write_text("0.png\n")
    with pytest.raises(ValueError, match="bad.txt:1: expected 'path label'"):
        ImageFolder(class_folders, labels_file=tmp_path / "bad.txt")


def test_batches_apply_the_transform(class_folders):
    X, _ = next(iter(ImageFolder(class_folders).batches(5, shuffle=False,
                                                        transform=lambda X: 1 - X)))
    np.testing.assert_allclose(X[0, :, 5, 4], [0.0, 1 - 128 / 255, 1.0], atol=1e-6)
