"""Datasets by name, and the device-resident training data of one run.

``load(name, data_root)`` returns the training split and the evaluation split of a dataset as numpy
arrays (images NHWC uint8). The evaluation split is the one the authors' code evaluates on (``test``;
CINIC-10: ``valid``, Tiny-ImageNet: ``val``), or another one the dataset has (``eval_split``). A file
``<data_root>/<name>.npz`` with keys x_train, y_train, x_<split>, y_<split> is used when present (the
form that ``python -m core.prepare_data`` writes from a downloaded copy, with x_test and y_test);
otherwise each dataset's own loader reads its usual files (torchvision for CIFAR and SVHN, image
folders for CINIC-10 and Tiny-ImageNet).
``DeviceData`` then keeps the imbalanced training subset and the test set on the training device as
uint8 tensors, so batching and augmentation never leave it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from core import cache
from core.augment import pad_crop_flip, standardise, to_unit
from core.imbalance import class_counts, imbalanced_indices

log = logging.getLogger(__name__)


@dataclass
class Arrays:
    x_train: np.ndarray  # (N, H, W, C) uint8
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray  # the evaluation split (see DatasetSpec.eval_splits)
    y_test: np.ndarray
    classes: list[str]
    # True when the training part is already an imbalanced subset (e.g. to_npz.py --long-tailed 300):
    # it is then used as it is, if its class counts are the ones the config asks for.
    presubsampled: bool = False


Loader = Callable[[str | None, bool, str], Arrays]  # (data_root, download, eval_split) -> Arrays


@dataclass(frozen=True)
class DatasetSpec:
    loader: Loader
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad: int  # pad-crop augmentation (pixels)
    flip: bool  # horizontal flips (not for digits)
    max_per_class: int | None = None  # n_max of the imbalance profile; None: len(train) / K
    # Images per class of the full training split: the n_max of a pre-subsampled file, whose own
    # training part is smaller (None where max_per_class fixes n_max).
    full_per_class: int | None = None
    # Class c of the imbalance profile goes to label count_order[c], and the subsets are drawn in this
    # order (SVHN: digit 0 is the tail and is drawn last, as in the reference code).
    count_order: tuple[int, ...] | None = None
    # Splits a model can be evaluated on; the first is the default, the one the authors' code uses.
    eval_splits: tuple[str, ...] = ("test",)
    download_help: str = ""


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, **spec) -> Callable:
    def wrap(loader: Loader) -> Loader:
        DATASETS[name] = DatasetSpec(loader=loader, **spec)
        return loader
    return wrap


def load(name: str, data_root: str | None = None, download: bool = False, eval_split: str | None = None) -> Arrays:
    """Dataset ``name`` as numpy arrays, from ``<data_root>/<name>.npz`` if it exists: its training
    split, and ``eval_split`` (None: the dataset's default) as the evaluation part."""
    if name not in DATASETS:
        raise ValueError(f"dataset: unknown dataset {name!r}; allowed: {sorted(DATASETS)}")
    eval_split = resolve_eval_split(name, eval_split)
    if data_root is not None:
        npz = os.path.join(data_root, f"{name}.npz")
        if os.path.exists(npz):
            return _load_npz(npz, eval_split)
    arrays = DATASETS[name].loader(data_root, download, eval_split)
    check_arrays(arrays, name)
    return arrays


def check_arrays(a: Arrays, name: str) -> None:
    """Shapes and label range, so a wrong data root fails here and not deep inside training."""
    for split in ("train", "test"):
        x, y = getattr(a, f"x_{split}"), getattr(a, f"y_{split}")
        if x.ndim != 4 or x.dtype != np.uint8 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
            raise ValueError(f"data_root: {name} x_{split} must be a non-empty (N, H, W, C) uint8 array with one "
                             f"label per image; got shape {x.shape}, dtype {x.dtype}, {len(y)} labels")
        if y.min() < 0 or y.max() >= len(a.classes):
            raise ValueError(f"data_root: {name} y_{split} labels must lie in [0, {len(a.classes) - 1}]; "
                             f"got [{y.min()}, {y.max()}]")


def resolve_eval_split(name: str, eval_split: str | None) -> str:
    """``eval_split``, or the dataset's default for None; an unknown split names the allowed ones."""
    allowed = DATASETS[name].eval_splits
    if eval_split is None:
        return allowed[0]
    if eval_split not in allowed:
        raise ValueError(f"eval_split: got {eval_split!r} for {name}; allowed: {list(allowed)} or None "
                         f"(the dataset's default, {allowed[0]!r})")
    return eval_split


def _load_npz(path: str, eval_split: str) -> Arrays:
    x_key, y_key = f"x_{eval_split}", f"y_{eval_split}"
    with np.load(path) as f:
        missing = {"x_train", "y_train", x_key, y_key} - set(f.files)
        if missing:
            raise ValueError(f"data_root: {path} lacks the keys {sorted(missing)} (evaluation split {eval_split!r})")
        y_train, y_eval = f["y_train"].astype(np.int64), f[y_key].astype(np.int64)
        num_classes = int(max(y_train.max(initial=-1), y_eval.max(initial=-1))) + 1  # empty: check_arrays
        arrays = Arrays(f["x_train"], y_train, f[x_key], y_eval, [str(c) for c in range(num_classes)],
                        presubsampled="train_index" in f.files)
    check_arrays(arrays, path)
    return arrays


# ----------------------------------------------------------------------------- the datasets

@register_dataset("digits", mean=(0.305,), std=(0.377,), pad=1, flip=False, max_per_class=120)
def _digits(data_root: str | None, download: bool, eval_split: str) -> Arrays:
    """scikit-learn's 8x8 handwritten digits (1,797 images, shipped with the package): a fixed balanced
    test part of 50 images per class is held out, the rest is the pool for the imbalanced training set."""
    images, labels = digits_arrays()
    rng = np.random.RandomState(0)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:50] for c in range(10)])
    train = np.setdiff1d(np.arange(len(labels)), test)
    return Arrays(images[train], labels[train], images[test], labels[test], [str(c) for c in range(10)])


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The digits as (N, 8, 8, 1) uint8 images and int64 labels, from the user's cache folder once a
    process has made them there: importing scikit-learn and parsing its CSV cost every trial's process
    about 2 s of CPU, more than training a demo cell."""
    def save(path: str) -> None:
        images, labels = digits_from_sklearn()
        np.savez(path, images=images, labels=labels)

    try:
        path = cache.made_once(f"digits-scikit-learn-{importlib.metadata.version('scikit-learn')}.npz", save)
    except OSError as err:
        log.debug("digits not cached (%s): read from scikit-learn", err)
        return digits_from_sklearn()
    with np.load(path) as f:
        return f["images"], f["labels"]


def digits_from_sklearn() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.clip(digits.images * 16, 0, 255).astype(np.uint8)[..., None], digits.target.astype(np.int64)


@register_dataset("synthetic", mean=(0.5,), std=(0.25,), pad=0, flip=False, max_per_class=100)
def _synthetic(data_root: str | None, download: bool, eval_split: str) -> Arrays:
    """Ten Gaussian blobs drawn as 8x8 images (100 train and 20 test per class): learnable in seconds."""
    rng = np.random.RandomState(1234)
    protos = rng.uniform(40, 215, size=(10, 8, 8, 1))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(10), n)
        x = protos[y] + rng.normal(0, 30, size=(len(y), 8, 8, 1))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    (x_tr, y_tr), (x_te, y_te) = draw(100), draw(20)
    return Arrays(x_tr, y_tr, x_te, y_te, [str(c) for c in range(10)])


def _torchvision(cls_name: str, data_root: str | None, download: bool, **split_kw) -> Arrays:
    import torchvision

    if data_root is None:
        raise ValueError(f"data_root: {cls_name} needs a data root (an absolute directory); pass "
                         f"--data-root DIR, with --download to fetch it there")
    cls = getattr(torchvision.datasets, cls_name)
    try:
        parts = [cls(data_root, download=download, **kw) for kw in split_kw.values()]
    except RuntimeError as err:
        raise ValueError(f"data_root: {cls_name} not found under {data_root} ({err}); download it with "
                         f"--download, or write {data_root}/<name>.npz") from None
    xs, ys = [], []
    for p in parts:
        data = np.asarray(p.data)
        xs.append(data.transpose(0, 2, 3, 1) if data.shape[1] == 3 else data)  # SVHN is NCHW
        ys.append(np.asarray(getattr(p, "targets", getattr(p, "labels", None)), dtype=np.int64))
    classes = list(getattr(parts[0], "classes", [str(c) for c in range(int(ys[0].max()) + 1)]))
    return Arrays(xs[0], ys[0], xs[1], ys[1], classes)


# Normalisation constants are those of the authors' code (imbalanced-DL), which the paper's numbers
# come from: CIFAR-100 reuses CIFAR-10's (as LDAM-DRW does), SVHN uses 0.5 / 0.5 (as Yang & Xu's code
# does), Tiny-ImageNet ImageNet's. Every method shares them, the baselines too, although M2m's official
# code (alinlab/M2m config.py) standardises CIFAR-100 with its own statistics ((0.5071, 0.4867, 0.4408)
# / (0.2675, 0.2565, 0.2761)): one input scale for every row of a table.
# Every real dataset is augmented with pad + crop + horizontal flip.
@register_dataset("cifar10", mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010), pad=4, flip=True,
                  full_per_class=5000,
                  download_help="torchvision downloads it with --download; or, from a downloaded "
                                "cifar-10-python.tar.gz: python -m core.prepare_data cifar10 --from FILE "
                                "--out DATA_ROOT/cifar10.npz")
def _cifar10(data_root: str | None, download: bool, eval_split: str) -> Arrays:
    return _torchvision("CIFAR10", data_root, download, train=dict(train=True), test=dict(train=False))


@register_dataset("cifar100", mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010), pad=4, flip=True,
                  full_per_class=500,
                  download_help="torchvision downloads it with --download; or, from a downloaded "
                                "cifar-100-python.tar.gz: python -m core.prepare_data cifar100 --from FILE "
                                "--out DATA_ROOT/cifar100.npz")
def _cifar100(data_root: str | None, download: bool, eval_split: str) -> Arrays:
    return _torchvision("CIFAR100", data_root, download, train=dict(train=True), test=dict(train=False))


@register_dataset("svhn", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), pad=4, flip=True,
                  max_per_class=1000, count_order=(1, 2, 3, 4, 5, 6, 7, 8, 9, 0),
                  download_help="torchvision downloads it with --download")
def _svhn(data_root: str | None, download: bool, eval_split: str) -> Arrays:
    return _torchvision("SVHN", data_root, download, train=dict(split="train"), test=dict(split="test"))


def _image_folders(data_root: str | None, name: str, sub: str, train: str, test: str,
                   test_labels: Callable[[str, list[str]], tuple[list[str], np.ndarray]] | None = None) -> Arrays:
    """Read class-per-folder images of the ``train`` and ``test`` (evaluation) folders into memory (done
    once per run; write an .npz to skip it)."""
    from PIL import Image

    root = os.path.join(data_root or "", sub)
    for split in (train, test):
        if data_root is None or not os.path.isdir(os.path.join(root, split)):
            raise ValueError(f"data_root: {name} expects {os.path.join('DATA_ROOT', sub, split)}/<class>/... ; "
                             f"not found under {data_root!r}")
    classes = sorted(os.listdir(os.path.join(root, train)))

    def read(paths: list[str]) -> np.ndarray:
        return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])

    def folder(split: str) -> tuple[list[str], np.ndarray]:
        paths, labels = [], []
        for c, cls in enumerate(classes):
            d = os.path.join(root, split, cls)
            d = os.path.join(d, "images") if os.path.isdir(os.path.join(d, "images")) else d
            files = sorted(os.listdir(d))
            paths += [os.path.join(d, f) for f in files]
            labels += [c] * len(files)
        return paths, np.asarray(labels, dtype=np.int64)

    train_paths, y_train = folder(train)
    test_paths, y_test = test_labels(os.path.join(root, test), classes) if test_labels else folder(test)
    return Arrays(read(train_paths), y_train, read(test_paths), y_test, classes)


@register_dataset("cinic10", mean=(0.47889522, 0.47227842, 0.43047404), std=(0.24205776, 0.23828046, 0.25874835),
                  pad=4, flip=True, full_per_class=9000, eval_splits=("valid", "test"),
                  download_help="unpack CINIC-10 so that DATA_ROOT/cinic10/{train,valid,test}/<class>/*.png exist")
def _cinic10(data_root: str | None, download: bool, eval_split: str) -> Arrays:
    return _image_folders(data_root, "cinic10", "cinic10", "train", eval_split)


def _tiny_val(val_dir: str, classes: list[str]) -> tuple[list[str], np.ndarray]:
    index = {c: i for i, c in enumerate(classes)}
    paths, labels = [], []
    with open(os.path.join(val_dir, "val_annotations.txt")) as f:
        for line in f:
            file, wnid = line.split("\t")[:2]
            paths.append(os.path.join(val_dir, "images", file))
            labels.append(index[wnid])
    return paths, np.asarray(labels, dtype=np.int64)


@register_dataset("tiny_imagenet", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), pad=8, flip=True,
                  full_per_class=500, eval_splits=("val",),
                  download_help="unpack tiny-imagenet-200 so that DATA_ROOT/tiny-imagenet-200/train exists")
def _tiny_imagenet(data_root: str | None, download: bool, eval_split: str) -> Arrays:
    return _image_folders(data_root, "tiny_imagenet", "tiny-imagenet-200", "train", "val", _tiny_val)


# ----------------------------------------------------------------------------- one run's data

def n_max(spec: DatasetSpec, arrays: Arrays) -> int:
    """The largest class's target count: the dataset's fixed value (SVHN: 1000), else the per-class
    size of the full training split, len(train) / K (reference-facts.md)."""
    if spec.max_per_class:
        return spec.max_per_class
    if arrays.presubsampled:
        return spec.full_per_class  # set for every dataset without max_per_class (tests/test_data.py)
    return len(arrays.y_train) // len(arrays.classes)


def training_counts(spec: DatasetSpec, arrays: Arrays, imbalance: str, ratio: float, mu: float) -> list[int]:
    """Per-label target counts: the imbalance profile of section 2.1, placed in label order."""
    num_classes = len(arrays.classes)
    profile = class_counts(n_max(spec, arrays), num_classes, ratio, imbalance, mu)
    order = spec.count_order or tuple(range(num_classes))
    counts = [0] * num_classes
    for c, label in enumerate(order):
        counts[label] = profile[c]
    return counts


@dataclass
class DeviceData:
    """One run's training and test images on ``device`` as uint8 (N, C, H, W), labels as int64.

    The training images are a pool that the members of a fused pack index into (their own SMOTE
    samples included). ``counts`` are the training counts n_c of the imbalanced set; they define
    majority and minority, the re-weighting and the label rules, also when SMOTE adds samples.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    counts: list[int]
    spec: DatasetSpec
    classes: list[str]
    x_val: torch.Tensor | None = None  # the validation part of the test set (val_split), if any
    y_val: torch.Tensor | None = None
    mean: torch.Tensor = field(init=False)
    std: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        device = self.x_train.device
        self.mean = torch.tensor(self.spec.mean, device=device)
        self.std = torch.tensor(self.spec.std, device=device)

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    @property
    def in_channels(self) -> int:
        return self.x_train.shape[1]

    def train_images(self, idx: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Training images ``idx`` (any shape S) augmented with the drawn ``offsets`` (S + (2,)) and
        ``flips`` (S), standardised: S + (C, H, W)."""
        x = to_unit(self.x_train[idx.flatten()])
        x = pad_crop_flip(x, self.spec.pad, offsets.reshape(-1, 2), flips.flatten())
        return standardise(x, self.mean, self.std).view(*idx.shape, *x.shape[1:])

    def eval_inputs(self, split: str, idx: slice) -> torch.Tensor:
        """Standardised, unaugmented images ``idx`` of the ``test`` or ``val`` set."""
        return standardise(to_unit(getattr(self, f"x_{split}")[idx]), self.mean, self.std)


def imbalanced_arrays(arrays: Arrays, spec: DatasetSpec, imbalance: str, ratio: float, mu: float,
                      subset_seed: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The imbalanced training subset (images, labels) and its per-class counts.

    A pre-subsampled training part is used as it is when its class counts are the ones that
    ``imbalance``, ``ratio`` (and ``mu``) give with the dataset's n_max; otherwise it is refused, so a
    run is never recorded under a setting its data does not have.
    """
    counts = training_counts(spec, arrays, imbalance, ratio, mu)
    if arrays.presubsampled:
        found = np.bincount(arrays.y_train, minlength=len(arrays.classes)).tolist()
        if found != counts:
            setting = f"imbalance={imbalance!r}, ratio={ratio:g}" + (f", mu={mu:g}" if imbalance == "step" else "")
            raise ValueError(f"imbalance/ratio: the data file's training set is already imbalanced (train_index "
                             f"present) with class counts {found}, but {setting} with the dataset's "
                             f"n_max={n_max(spec, arrays)} give {counts}; set imbalance and ratio to the "
                             f"file's, or point data_root at the full dataset")
        log.info("training set is already imbalanced as configured (counts %s); used as it is", counts)
        return arrays.x_train, arrays.y_train, counts
    idx = imbalanced_indices(arrays.y_train, counts, subset_seed, spec.count_order)
    return arrays.x_train[idx], arrays.y_train[idx], counts


def validation_split(labels: np.ndarray, val_split: int | float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation indices, test indices) of an evaluation set with ``labels``: ``val_split`` images of
    each class (a count, or a fraction of each class's images) chosen by a seeded shuffle of the class,
    the rest staying the test set. A balanced test set gives two balanced sets; the training set is
    untouched (as in M2m's official protocol: 100 of CIFAR-10's 1,000 test images per class)."""
    rng = np.random.RandomState(seed)
    val, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        take = int(val_split) if isinstance(val_split, int) else int(round(val_split * len(idx)))
        if not 0 < take < len(idx):
            raise ValueError(f"val_split: {val_split!r} takes {take} of the {len(idx)} test images of class {c}; "
                             f"allowed: at least one, and fewer than all")
        val.append(np.sort(idx[:take]))
        test.append(np.sort(idx[take:]))
    return np.concatenate(val), np.concatenate(test)


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, end) of each batch of an epoch over ``n`` samples; a last batch of one sample would break
    BatchNorm's training statistics and is skipped (the classifier's and DeepSMOTE's autoencoder's)."""
    return [(a, min(a + batch_size, n)) for a in range(0, n, batch_size) if min(a + batch_size, n) - a > 1]


def channels_first(x: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """Images (N, H, W, C), as datasets store them, as a tensor (N, C, H, W) of the same dtype on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)


def to_device(x_train: np.ndarray, y_train: np.ndarray, arrays: Arrays, counts: list[int], spec: DatasetSpec,
              device: torch.device, val_split: int | float | str = "none", val_seed: int = 0) -> DeviceData:
    """The run's data on ``device``; with a ``val_split`` the test set loses its validation part."""
    def images(x: np.ndarray) -> torch.Tensor:
        return channels_first(x, device)

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)

    test, val = np.arange(len(arrays.y_test)), None
    if val_split != "none":
        val, test = validation_split(arrays.y_test, val_split, val_seed)
    return DeviceData(images(x_train), labels(y_train), images(arrays.x_test[test]), labels(arrays.y_test[test]),
                      list(counts), spec, list(arrays.classes),
                      None if val is None else images(arrays.x_test[val]),
                      None if val is None else labels(arrays.y_test[val]))
