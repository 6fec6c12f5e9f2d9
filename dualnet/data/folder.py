"""Image-folder datasets, decoded lazily one minibatch at a time (Pillow).

Two layouts:

- one sub-folder per class: `root/cat/001.png`, `root/dog/7.jpg`, ... (class names are the
  sorted folder names);
- a folder of images plus a labels file: lines `relative/path.png label`, separated by
  whitespace or a comma; `#` starts a comment. Labels are class names, or integers
  0..K-1.

Only file names and labels are held in memory, so a dataset far larger than RAM (say
200k eye-region crops) trains through `Solver`'s loader mode: `ImageFolder.batches(...)`
is an iterable of (X_batch, y_batch) that reshuffles on every pass.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

__all__ = ["ImageFolder", "Batches", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm")


class ImageFolder:
    """Labelled images on disk.

    Args:
        root: the folder.
        labels_file: path of a labels file (second layout); None for one folder per class.
        grayscale: decode as 1 channel ('L') instead of 3 ('RGB').
        size: resize every image to (H, W) (an int means square); None keeps the file's
            size, which must then be the same for all images of a batch.
        dtype: float dtype of the returned images, whose pixels are scaled to [0, 1].
        workers: threads decoding images in parallel (Pillow releases the GIL).
    Attributes:
        paths (list of Path), labels (int64 (N,)), class_names (list of str).
    """

    def __init__(self, root, labels_file=None, grayscale=False, size=None, dtype=np.float32,
                 workers=2):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        self.grayscale = grayscale
        self.size = (size, size) if isinstance(size, int) else (tuple(size) if size else None)
        self.dtype = np.dtype(dtype)
        self.workers = workers
        if labels_file is None:
            self.paths, self.labels, self.class_names = _scan_class_folders(self.root)
        else:
            self.paths, self.labels, self.class_names = _read_labels_file(self.root,
                                                                          Path(labels_file))
        if not self.paths:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {self.root}")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices) -> ImageFolder:
        """A view of the images at `indices` (same decoding options and class names)."""
        view = object.__new__(ImageFolder)
        view.__dict__.update(self.__dict__)
        idx = np.asarray(indices, dtype=np.int64)
        view.paths = [self.paths[i] for i in idx]
        view.labels = self.labels[idx]
        return view

    def split(self, num_validation, num_test, seed=0):
        """(train, val, test) views: a fixed-seed shuffle, the first `num_validation`
        images for validation, the next `num_test` for test, the rest for training."""
        if num_validation + num_test >= len(self):
            raise ValueError(f"cannot take {num_validation} validation and {num_test} test "
                             f"images out of {len(self)}")
        order = np.random.RandomState(seed).permutation(len(self))
        cut = num_validation + num_test
        return (self.subset(order[cut:]), self.subset(order[:num_validation]),
                self.subset(order[num_validation:cut]))

    def load(self, indices=None):
        """Decode images `indices` (default: all). Returns X (n, C, H, W) `dtype` in
        [0, 1] (C = 1 if grayscale else 3) and y int64 (n,)."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, np.int64)
        paths = [self.paths[i] for i in idx]
        if self.workers > 1 and len(paths) > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                images = list(pool.map(self._read, paths))
        else:
            images = [self._read(p) for p in paths]
        for p, im in zip(paths, images, strict=True):
            if im.shape != images[0].shape:
                raise ValueError(f"{p} is {im.shape[1]}x{im.shape[2]} but {paths[0]} is "
                                 f"{images[0].shape[1]}x{images[0].shape[2]}; pass size=(H, W) "
                                 "to resize every image")
        X = np.stack(images).astype(self.dtype) / self.dtype.type(255)
        return X, self.labels[idx]

    def batches(self, batch_size, shuffle=True, seed=None, drop_last=False,
                transform=None) -> Batches:
        """An iterable of minibatches (X (B, C, H, W), y (B,)), decoded as they are needed;
        `transform(X) -> X` (e.g. a fitted `Normalizer`) is applied to each X."""
        return Batches(self, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                       transform=transform)

    def _read(self, path: Path) -> np.ndarray:
        """One image as uint8 (C, H, W)."""
        from PIL import Image

        try:
            with Image.open(path) as im:
                im = im.convert("L" if self.grayscale else "RGB")
                if self.size is not None:
                    im = im.resize((self.size[1], self.size[0]), Image.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
        except OSError as exc:  # Pillow's UnidentifiedImageError is an OSError
            raise ValueError(f"cannot decode image {path}: {exc}") from None
        return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


class Batches:
    """Minibatches of an `ImageFolder`, reshuffled on each iteration (one epoch).

    With `seed`, epoch k uses permutation `RandomState(seed + k)`, so a run is
    reproducible; without, the global NumPy random state (see `dualnet.seed`).
    """

    def __init__(self, dataset: ImageFolder, batch_size, shuffle=True, seed=None,
                 drop_last=False, transform=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.transform = transform
        self._epoch = 0

    def __len__(self) -> int:
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        n = len(self.dataset)
        if not self.shuffle:
            order = np.arange(n)
        elif self.seed is None:
            order = np.random.permutation(n)
        else:
            order = np.random.RandomState(self.seed + self._epoch).permutation(n)
        self._epoch += 1
        for k in range(len(self)):
            X, y = self.dataset.load(order[k * self.batch_size:(k + 1) * self.batch_size])
            yield (X if self.transform is None else self.transform(X)), y


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _scan_class_folders(root: Path):
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"{root} has no class sub-folders; put each class's images in its "
                         "own folder, or pass labels_file")
    paths, labels = [], []
    for k, d in enumerate(class_dirs):
        files = sorted(p for p in d.rglob("*") if _is_image(p))
        paths += files
        labels += [k] * len(files)
    return paths, np.asarray(labels, dtype=np.int64), [d.name for d in class_dirs]


def _read_labels_file(root: Path, labels_file: Path):
    if not labels_file.is_file():
        raise FileNotFoundError(f"labels file {labels_file} does not exist")
    paths, names = [], []
    for lineno, line in enumerate(labels_file.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.replace(",", " ").split()
        if len(fields) != 2:
            raise ValueError(f"{labels_file}:{lineno}: expected 'path label', got {line!r}")
        path = root / fields[0]
        if not _is_image(path):
            raise ValueError(f"{labels_file}:{lineno}: {path} is not an image file")
        paths.append(path)
        names.append(fields[1])
    if all(n.isdigit() for n in names):
        labels = np.asarray([int(n) for n in names], dtype=np.int64)
        class_names = [str(k) for k in range(labels.max() + 1)] if names else []
    else:
        class_names = sorted(set(names))
        index = {n: k for k, n in enumerate(class_names)}
        labels = np.asarray([index[n] for n in names], dtype=np.int64)
    return paths, labels, class_names
