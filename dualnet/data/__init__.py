"""Datasets: CIFAR-10/100 (with a verified downloader), image folders, the bundled digits,
and preprocessing (normalization fitted on train, minibatch augmentation)."""

from .cifar import (
    get_CIFAR10_data,
    get_CIFAR100_data,
    load_CIFAR10,
    load_CIFAR100,
    load_CIFAR_batch,
)
from .digits import get_digits_data
from .download import cache_dir, locate
from .folder import ImageFolder
from .preprocess import Normalizer, augment, random_crop, random_flip
