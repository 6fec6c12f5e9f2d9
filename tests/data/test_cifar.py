"""CIFAR loaders on tiny files written in the official python-pickle format."""

import os
import pickle

import numpy as np
import pytest

from dualnet.data.cifar import (
    cifar10_label_names,
    cifar100_label_names,
    get_CIFAR10_data,
    get_CIFAR100_data,
    load_CIFAR10,
    load_CIFAR100,
    load_CIFAR_batch,
)
from dualnet.data.download import DatasetNotFound


@pytest.mark.parametrize("style", ["py2", "py3-protocol2", "py3"])
def test_load_cifar10_layout_labels_and_names(tmp_path, cifar_files, style):
    rows, labels, test_rows, test_labels = cifar_files.make_cifar10(
        tmp_path, per_batch=4, n_test=3, style=style)
    Xtr, ytr, Xte, yte = load_CIFAR10(tmp_path)
    assert Xtr.shape == (20, 32, 32, 3) and Xte.shape == (3, 32, 32, 3)
    assert Xtr.dtype == np.float32 and ytr.dtype == np.int64
    np.testing.assert_array_equal(ytr, labels)
    np.testing.assert_array_equal(yte, test_labels)
    # a row is 1024 red values (row-major 32x32), then green, then blue
    img, row = Xtr[7], rows[7]
    assert img[0, 0, 0] == row[0]
    assert img[0, 1, 0] == row[1]
    assert img[1, 0, 0] == row[32]
    assert img[2, 5, 1] == row[1024 + 2 * 32 + 5]
    assert img[31, 31, 2] == row[3071]
    assert Xte[2, 4, 9, 2] == test_rows[2, 2048 + 4 * 32 + 9]


def test_label_names_decoded_to_str(tmp_path, cifar_files):
    cifar_files.make_cifar10(tmp_path)
    assert cifar10_label_names(tmp_path) == cifar_files.names


def test_float64_on_request(tmp_path, cifar_files):
    cifar_files.make_cifar10(tmp_path)
    Xtr, *_ = load_CIFAR10(tmp_path, dtype=np.float64)
    assert Xtr.dtype == np.float64


@pytest.mark.parametrize("mode", ["fine", "coarse", "both"])
def test_load_cifar100_fine_and_coarse(tmp_path, cifar_files, mode):
    written = cifar_files.make_cifar100(tmp_path, n_train=6, n_test=2)
    Xtr, ytr, Xte, yte = load_CIFAR100(tmp_path, label_mode=mode)
    assert Xtr.shape == (6, 32, 32, 3) and Xte.shape == (2, 32, 32, 3)
    rows, fine, coarse = written["train"]
    assert Xtr[3, 10, 20, 1] == rows[3, 1024 + 10 * 32 + 20]
    expected = {"fine": fine, "coarse": coarse}
    if mode == "both":
        np.testing.assert_array_equal(ytr[0], fine)
        np.testing.assert_array_equal(ytr[1], coarse)
        np.testing.assert_array_equal(yte[1], written["test"][2])
    else:
        np.testing.assert_array_equal(ytr, expected[mode])


def test_cifar100_names(tmp_path, cifar_files):
    cifar_files.make_cifar100(tmp_path)
    assert cifar100_label_names(tmp_path, "fine")[42] == "fine42"
    assert len(cifar100_label_names(tmp_path, "coarse")) == 20


def test_get_cifar10_data_course_split(tmp_path, cifar_files):
    folder = tmp_path / "cifar-10-batches-py"
    rows, labels, test_rows, test_labels = cifar_files.make_cifar10(folder, per_batch=4, n_test=3)
    data = get_CIFAR10_data(num_training=15, num_validation=5, num_test=2,
                                           root=tmp_path, fetch=False)
    assert data["X_train"].shape == (15, 3, 32, 32)
    assert data["X_val"].shape == (5, 3, 32, 32)
    assert data["X_test"].shape == (2, 3, 32, 32)
    assert all(data[k].dtype == np.float32 for k in ("X_train", "X_val", "X_test"))
    # the course split: val is the images right after the training ones
    np.testing.assert_array_equal(data["y_train"], labels[:15])
    np.testing.assert_array_equal(data["y_val"], labels[15:20])
    np.testing.assert_array_equal(data["y_test"], test_labels[:2])
    # mean image of the training split subtracted from all three
    mean_image = rows[:15].astype(np.float64).mean(axis=0).reshape(3, 32, 32)
    np.testing.assert_allclose(data["X_val"][0], rows[15].reshape(3, 32, 32) - mean_image,
                               atol=1e-3)
    np.testing.assert_allclose(data["X_train"].mean(axis=0), 0, atol=1e-3)
    assert data["class_names"] == cifar_files.names


def test_get_cifar10_data_without_mean_subtraction(tmp_path, cifar_files):
    rows, *_ = cifar_files.make_cifar10(tmp_path, per_batch=4)
    data = get_CIFAR10_data(num_training=10, num_validation=2, num_test=1,
                                           subtract_mean=False, root=tmp_path, fetch=False)
    np.testing.assert_array_equal(data["X_train"][4], rows[4].reshape(3, 32, 32))


def test_get_cifar100_data_coarse(tmp_path, cifar_files):
    written = cifar_files.make_cifar100(tmp_path / "cifar-100-python", n_train=6, n_test=2)
    data = get_CIFAR100_data(num_training=4, num_validation=2, num_test=2,
                                            label_mode="coarse", root=tmp_path, fetch=False)
    np.testing.assert_array_equal(data["y_val"], written["train"][2][4:6])
    assert len(data["class_names"]) == 20


def test_asking_for_more_images_than_the_files_hold(tmp_path, cifar_files):
    cifar_files.make_cifar10(tmp_path, per_batch=2)
    with pytest.raises(ValueError, match="hold 10"):
        get_CIFAR10_data(num_training=49000, root=tmp_path, fetch=False)


def test_missing_dataset_without_fetch_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetNotFound) as info:
        get_CIFAR10_data(root=tmp_path, fetch=False)
    msg = str(info.value)
    assert str(tmp_path) in msg and "cifar-10-python.tar.gz" in msg
    assert "c58f30108f718f92721af3b95e74349a" in msg


def test_malformed_batch_rejected(tmp_path, cifar_files):
    cifar_files.write_batch(tmp_path / "b", {b"data": np.zeros((2, 100), np.uint8),
                                       b"labels": [0, 1]})
    with pytest.raises(ValueError, match="uint8 \\(N, 3072\\)"):
        load_CIFAR_batch(tmp_path / "b")
    cifar_files.write_batch(tmp_path / "c", {b"data": np.zeros((2, 3072), np.uint8),
                                       b"labels": [0, 10]})
    with pytest.raises(ValueError, match="labels"):
        load_CIFAR_batch(tmp_path / "c")


def test_not_a_pickle_rejected(tmp_path):
    (tmp_path / "b").write_bytes(b"this is not a pickle")
    with pytest.raises(ValueError, match="not a CIFAR python batch"):
        load_CIFAR_batch(tmp_path / "b")


class _Exploit:
    """Unpickling this would create a folder: a stand-in for arbitrary code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_pickle_that_runs_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "b", "wb") as f:
        pickle.dump({b"data": _Exploit(str(marker)), b"labels": []}, f, protocol=2)
    with pytest.raises(ValueError, match="refusing to load posix.mkdir|refusing to load os"):
        load_CIFAR_batch(tmp_path / "b")
    assert not marker.exists()



# -- CIFAR-100's MATLAB version: the same arrays as the pickled one -----------------------------

def _arrays(loaded):
    """`load_CIFAR100`'s result as a flat list of arrays ('both' label pairs unpacked)."""
    return [a for value in loaded for a in (value if isinstance(value, tuple) else (value,))]


@pytest.mark.parametrize("mode", ["fine", "coarse", "both"])
@pytest.mark.parametrize("names", ["cells", "chars"])
def test_cifar100_matlab_files_give_the_pickles_arrays(tmp_path, cifar_files, mode, names):
    written = cifar_files.make_cifar100(tmp_path / "py", n_train=6, n_test=3)
    cifar_files.make_cifar100_mat(tmp_path / "mat", n_train=6, n_test=3, names=names)
    from_pickles = load_CIFAR100(tmp_path / "py", label_mode=mode)
    from_mat = load_CIFAR100(tmp_path / "mat", label_mode=mode)
    for got, expected in zip(_arrays(from_mat), _arrays(from_pickles), strict=True):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
    # and both are the data written, in the course's layout
    Xtr = from_mat[0]
    rows, fine, coarse = written["train"]
    assert Xtr.shape == (6, 32, 32, 3) and Xtr[4, 3, 7, 2] == rows[4, 2048 + 3 * 32 + 7]
    for split_labels, (_, f, c) in ((from_mat[1], written["train"]),
                                    (from_mat[3], written["test"])):
        expected = {"fine": f, "coarse": c, "both": (f, c)}[mode]
        np.testing.assert_array_equal(split_labels, expected)
    for label_mode in ("fine", "coarse"):
        assert (cifar100_label_names(tmp_path / "mat", label_mode)
                == cifar100_label_names(tmp_path / "py", label_mode))
    assert cifar100_label_names(tmp_path / "mat", "fine")[42] == "fine42"


@pytest.mark.parametrize("where", [".", "cifar-100-matlab"])
def test_get_cifar100_data_from_matlab_files(tmp_path, cifar_files, where):
    cifar_files.make_cifar100(tmp_path / "py" / "cifar-100-python", n_train=6, n_test=2)
    cifar_files.make_cifar100_mat(tmp_path / "mat" / where, n_train=6, n_test=2)
    kwargs = {"num_training": 4, "num_validation": 2, "num_test": 2, "label_mode": "coarse",
              "fetch": False}
    from_mat = get_CIFAR100_data(root=tmp_path / "mat", **kwargs)
    from_pickles = get_CIFAR100_data(root=tmp_path / "py", **kwargs)
    assert from_mat.keys() == from_pickles.keys()
    for key, value in from_pickles.items():
        if key == "class_names":
            assert from_mat[key] == value and len(value) == 20
        else:
            assert from_mat[key].dtype == value.dtype
            np.testing.assert_array_equal(from_mat[key], value)


def test_missing_cifar100_mentions_the_matlab_files(tmp_path):
    with pytest.raises(DatasetNotFound, match="cifar-100-python.tar.gz.*or put the MATLAB "
                                              "version's train.mat, test.mat and meta.mat in"):
        get_CIFAR100_data(root=tmp_path, fetch=False)


def test_matlab_folder_missing_a_file(tmp_path, cifar_files):
    cifar_files.make_cifar100_mat(tmp_path)
    (tmp_path / "test.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"CIFAR file .*test\.mat is missing"):
        load_CIFAR100(tmp_path)


def test_unreadable_matlab_files_are_named(tmp_path, cifar_files):
    cifar_files.make_cifar100_mat(tmp_path)
    (tmp_path / "train.mat").write_bytes(b"not a MATLAB file" * 20)
    with pytest.raises(ValueError, match=r"train\.mat is not a CIFAR MATLAB file"):
        load_CIFAR100(tmp_path)
    # a v7.3 (HDF5) file: scipy.io reads the version from the 128-byte header and refuses it
    header = b"MATLAB 7.3 MAT-file".ljust(116) + bytes(8) + b"\x00\x02" + b"IM"
    (tmp_path / "train.mat").write_bytes(header + bytes(512))
    with pytest.raises(ValueError, match=r"train\.mat is a MATLAB v7\.3 file, which scipy\.io "
                                         r"cannot read; save it again with MATLAB's "
                                         r"save\(\.\.\., '-v7'\)"):
        load_CIFAR100(tmp_path)


def test_matlab_file_with_bad_contents(tmp_path, cifar_files):
    from scipy.io import savemat

    cifar_files.make_cifar100_mat(tmp_path)
    savemat(tmp_path / "test.mat", {"data": np.zeros((2, 100), np.uint8),
                                    "fine_labels": np.zeros((2, 1), np.uint8)})
    with pytest.raises(ValueError, match=r"test\.mat: 'data' must be uint8 \(N, 3072\)"):
        load_CIFAR100(tmp_path)
    savemat(tmp_path / "test.mat", {"data": np.zeros((2, 3072), np.uint8),
                                    "fine_labels": np.array([[0], [100]], np.uint8)})
    with pytest.raises(ValueError, match=r"test\.mat: 'fine_labels' must be 2 ints in \[0, 100\)"):
        load_CIFAR100(tmp_path)
    with pytest.raises(ValueError, match=r"meta\.mat: no 'middle_label_names' entry"):
        cifar100_label_names(tmp_path, "middle")
