"""Datasets by name, .npz data roots, the evaluation split, the batched augmentation, and the real CIFAR-10."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, SHARED
from core.augment import draw_crops, pad_crop_flip
from core.data import DATASETS, digits_arrays, digits_from_sklearn, imbalanced_arrays, load

CIFAR_DIR = os.path.join(SHARED, "data", "cifar10")
TO_NPZ = os.path.join(CIFAR_DIR, "to_npz.py")


# ----------------------------------------------------------------------------- embedded datasets

def test_digits_are_made_once_in_the_cache_folder_and_read_there_without_scikit_learn(tmp_path, monkeypatch):
    """Importing scikit-learn and parsing its CSV cost every trial's process about 2 s of CPU: once one
    process has put the arrays in the user's cache folder, the others read them there."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    images, labels = digits_from_sklearn()
    for _ in range(2):  # made, then read
        cached = digits_arrays()
        np.testing.assert_array_equal(cached[0], images)
        np.testing.assert_array_equal(cached[1], labels)
        assert cached[0].dtype == np.uint8 and cached[1].dtype == np.int64
    assert len(os.listdir(tmp_path / "smote2mixup")) == 1
    script = "import sys; from core.data import load; a = load('digits'); print('sklearn' in sys.modules, a.x_train.sum())"
    found = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
                           env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)}).stdout.split()
    assert found == ["False", str(load("digits").x_train.sum())]


def test_digits_load_where_the_cache_folder_cannot_be_written(tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    images, labels = digits_arrays()
    np.testing.assert_array_equal(images, digits_from_sklearn()[0])
    assert len(labels) == 1797


def test_digits_shapes_balanced_test_part_and_disjoint_split():
    from sklearn.datasets import load_digits

    a = load("digits")
    assert a.x_train.dtype == np.uint8 and a.x_test.dtype == np.uint8
    assert a.x_train.shape[1:] == (8, 8, 1) and a.x_test.shape == (500, 8, 8, 1)
    assert a.x_train.max() == 255 and a.x_train.min() == 0
    assert a.y_train.dtype == np.int64 and a.y_train.shape == (len(a.x_train),)
    assert np.bincount(a.y_test).tolist() == [50] * 10
    assert len(a.classes) == 10 and not a.presubsampled
    # the two parts are a partition of scikit-learn's 1,797 images: together exactly the whole set
    digits = load_digits()
    assert len(a.x_train) + len(a.x_test) == len(digits.target) == 1797
    assert (np.bincount(a.y_train) + np.bincount(a.y_test)).tolist() == np.bincount(digits.target).tolist()
    ours = np.concatenate([np.concatenate([a.x_train, a.x_test]).reshape(-1, 64),
                           np.concatenate([a.y_train, a.y_test])[:, None]], 1)
    pixels = np.minimum(digits.images * 16, 255).astype(np.uint8)  # 0..16 to 0..255 (16 -> 255, not 0)
    theirs = np.concatenate([pixels.reshape(-1, 64), digits.target[:, None]], 1)
    np.testing.assert_array_equal(np.unique(ours, axis=0, return_counts=True)[1],
                                  np.unique(theirs, axis=0, return_counts=True)[1])
    np.testing.assert_array_equal(np.unique(ours, axis=0), np.unique(theirs, axis=0))
    # the fixed split is the same on every call
    b = load("digits")
    np.testing.assert_array_equal(a.y_test, b.y_test)
    np.testing.assert_array_equal(a.x_train, b.x_train)


def test_digits_pool_supports_the_default_imbalanced_subset():
    a = load("digits")
    x, y, counts = imbalanced_arrays(a, DATASETS["digits"], "long_tailed", 10.0, 0.5, subset_seed=0)
    assert counts[0] == 120 and counts[-1] == 12 and counts == sorted(counts, reverse=True)
    assert np.bincount(y, minlength=10).tolist() == counts and len(x) == sum(counts)


def test_synthetic_dataset():
    a = load("synthetic")
    assert a.x_train.shape == (1000, 8, 8, 1) and a.x_test.shape == (200, 8, 8, 1)
    assert a.x_train.dtype == np.uint8
    assert np.bincount(a.y_train).tolist() == [100] * 10 and np.bincount(a.y_test).tolist() == [20] * 10
    np.testing.assert_array_equal(a.x_train, load("synthetic").x_train)  # seeded
    # learnable: the nearest class mean of the training part classifies every test image
    means = np.stack([a.x_train[a.y_train == c].reshape(-1, 64).mean(0) for c in range(10)])
    pred = ((a.x_test.reshape(-1, 1, 64) - means[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(pred, a.y_test)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'") as err:
        load("mnist")
    for name in ("cifar10", "digits", "synthetic", "tiny_imagenet"):
        assert name in str(err.value)


# ----------------------------------------------------------------------------- .npz data roots

def _write_npz(path, n_train=30, n_test=10, k=3, **override):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.integers(0, 256, (n_train, 6, 6, 3), dtype=np.uint8),
                  y_train=np.arange(n_train) % k,
                  x_test=rng.integers(0, 256, (n_test, 6, 6, 3), dtype=np.uint8),
                  y_test=np.arange(n_test) % k)
    arrays.update(override)
    np.savez(path, **{key: v for key, v in arrays.items() if v is not None})
    return arrays


def test_an_npz_in_the_data_root_is_used(tmp_path):
    written = _write_npz(tmp_path / "cifar10.npz")
    a = load("cifar10", str(tmp_path))
    np.testing.assert_array_equal(a.x_train, written["x_train"])
    np.testing.assert_array_equal(a.y_test, written["y_test"])
    assert a.y_train.dtype == np.int64 and a.classes == ["0", "1", "2"] and not a.presubsampled



def _write_presubsampled(path, counts):
    """An npz like to_npz.py --long-tailed writes: a training part with ``counts[c]`` images of class c
    and its original indices in train_index (tiny 2x2 images)."""
    y_train = np.repeat(np.arange(len(counts)), counts)
    x_train = (np.arange(len(y_train))[:, None, None, None] % 251).astype(np.uint8).repeat(2, 1).repeat(2, 2)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_train[:20], y_test=np.arange(20) % len(counts),
             train_index=np.arange(len(y_train)))
    return x_train, y_train


CIFAR10_LT300 = [5000, 2652, 1407, 746, 396, 210, 111, 59, 31, 16]


def test_a_presubsampled_file_is_used_as_it_is_when_it_matches_the_config(tmp_path):
    x_written, y_written = _write_presubsampled(tmp_path / "cifar10.npz", CIFAR10_LT300)
    a = load("cifar10", str(tmp_path))
    assert a.presubsampled
    x, y, counts = imbalanced_arrays(a, DATASETS["cifar10"], "long_tailed", 300, 0.5, subset_seed=0)
    assert counts == CIFAR10_LT300
    np.testing.assert_array_equal(x, x_written)  # not subsampled again
    np.testing.assert_array_equal(y, y_written)
    # SVHN's n_max is 1000 and its tail is digit 0
    svhn = [10, 1000, 599, 359, 215, 129, 77, 46, 27, 16]
    _write_presubsampled(tmp_path / "svhn.npz", svhn)
    assert imbalanced_arrays(load("svhn", str(tmp_path)), DATASETS["svhn"], "long_tailed", 100, 0.5, 0)[2] == svhn


@pytest.mark.parametrize("setting, words", [
    (dict(imbalance="long_tailed", ratio=100), ["imbalance='long_tailed', ratio=100 ", "2997"]),
    (dict(imbalance="step", ratio=300, mu=0.5), ["imbalance='step', ratio=300, mu=0.5", "[5000, 5000"]),
    (dict(imbalance="balanced", ratio=300), ["imbalance='balanced'"]),
], ids=["other-ratio", "step", "balanced"])
def test_a_presubsampled_file_that_disagrees_with_the_config_is_refused(tmp_path, setting, words):
    _write_presubsampled(tmp_path / "cifar10.npz", CIFAR10_LT300)
    a = load("cifar10", str(tmp_path))
    with pytest.raises(ValueError) as err:
        imbalanced_arrays(a, DATASETS["cifar10"], setting["imbalance"], setting["ratio"], setting.get("mu", 0.5), 0)
    message = str(err.value)
    assert message.startswith("imbalance/ratio:") and "n_max=5000" in message, message
    assert str(CIFAR10_LT300) in message and "train_index" in message
    for word in words:
        assert word in message, (word, message)


def test_a_presubsampled_file_with_another_head_size_is_refused(tmp_path):
    """Long-tailed 300 in shape, but from 2,500 images per class: not CIFAR-10-LT-300 (n_max 5000)."""
    from core.imbalance import class_counts

    _write_presubsampled(tmp_path / "cifar10.npz", class_counts(2500, 10, 300))
    with pytest.raises(ValueError, match=r"n_max=5000 give \[5000, 2652"):
        imbalanced_arrays(load("cifar10", str(tmp_path)), DATASETS["cifar10"], "long_tailed", 300, 0.5, 0)


def test_training_refuses_a_file_that_disagrees_with_the_config(tmp_path):
    """The user's path: train() stops before any epoch, naming the fields."""
    from core.train import train

    _write_presubsampled(tmp_path / "cifar10.npz", CIFAR10_LT300)
    reports = []
    with pytest.raises(ValueError, match="imbalance/ratio:.*ratio=100"):
        train(dict(dataset="cifar10", data_root=str(tmp_path), ratio=100.0, epochs=1, device="cpu"), reports.append)
    assert reports == []


@pytest.mark.parametrize("override, words", [
    (dict(x_train=np.zeros((30, 6, 6), dtype=np.uint8)), ["x_train", "(N, H, W, C)"]),
    (dict(x_test=np.zeros((10, 6, 6, 3), dtype=np.float32)), ["x_test", "uint8"]),
    (dict(y_train=np.zeros(29, dtype=np.int64)), ["x_train", "one label per image"]),
    (dict(y_test=np.zeros((10, 1), dtype=np.int64)), ["x_test", "one label per image"]),
    (dict(x_train=np.zeros((0, 6, 6, 3), dtype=np.uint8), y_train=np.zeros(0, dtype=np.int64)), ["non-empty"]),
    (dict(y_train=-(np.arange(30) % 3)), ["y_train", "labels must lie in"]),
    (dict(y_test=None), ["lacks the keys", "y_test"]),
    (dict(x_train=None, y_train=None), ["lacks the keys", "x_train", "y_train"]),
], ids=["x-3d", "x-float", "y-length", "y-2d", "empty", "negative-label", "no-y_test", "no-train"])
def test_a_bad_npz_fails_with_a_message_naming_the_data_root(tmp_path, override, words):
    _write_npz(tmp_path / "cifar10.npz", **override)
    with pytest.raises(ValueError) as err:
        load("cifar10", str(tmp_path))
    message = str(err.value)
    assert message.startswith("data_root:") and str(tmp_path) in message, message
    for word in words:
        assert word in message, (word, message)


# ----------------------------------------------------------------------------- the evaluation split

def _write_cinic_tree(root, splits=("train", "valid", "test"), per_class=(6, 2, 3), side=8):
    """A tiny CINIC-10-like tree: root/cinic10/<split>/<class>/<k>.png; pixel value 100 * split index +
    10 * class + k tells where an image came from."""
    from PIL import Image

    for s, (split, n) in enumerate(zip(splits, per_class)):
        for c, cls in enumerate(("airplane", "cat")):
            folder = root / "cinic10" / split / cls
            folder.mkdir(parents=True)
            for k in range(n):
                Image.fromarray(np.full((side, side, 3), 100 * s + 10 * c + k, dtype=np.uint8)).save(folder / f"{k}.png")


def test_cinic10_is_evaluated_on_its_valid_split_by_default(tmp_path):
    from core.config import ConfigError, TrainConfig

    _write_cinic_tree(tmp_path)
    a = load("cinic10", str(tmp_path))
    assert a.classes == ["airplane", "cat"]
    assert a.x_train[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]
    assert a.x_test[:, 0, 0, 0].tolist() == [100, 101, 110, 111] and a.y_test.tolist() == [0, 0, 1, 1]
    t = load("cinic10", str(tmp_path), eval_split="test")
    assert t.x_test[:, 0, 0, 0].tolist() == [200, 201, 202, 210, 211, 212]
    np.testing.assert_array_equal(t.x_train, a.x_train)
    with pytest.raises(ValueError, match=r"eval_split: got 'val' for cinic10; allowed: \['valid', 'test'\]"):
        load("cinic10", str(tmp_path), eval_split="val")
    # the config resolves None to the dataset's choice and names the field on a bad value
    assert TrainConfig(dataset="cinic10", data_root=str(tmp_path)).eval_split == "valid"
    assert TrainConfig(dataset="cinic10", eval_split="test").eval_split == "test"
    assert TrainConfig(dataset="cifar10").eval_split == "test" and TrainConfig(dataset="tiny_imagenet").eval_split == "val"
    with pytest.raises(ConfigError, match=r"eval_split: got 'valid'; allowed: \['test'\] for cifar10"):
        TrainConfig(dataset="cifar10", eval_split="valid")


def test_tiny_imagenet_reads_its_train_folders_and_its_annotated_val_folder(tmp_path):
    """The layout of tiny-imagenet-200.zip: train/<wnid>/images/*.JPEG beside a <wnid>_boxes.txt, and one
    val/images folder whose classes are in val/val_annotations.txt (file, wnid, box), in no class order."""
    from PIL import Image

    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n02124075", "n01443537"]  # the labels follow the sorted names
    for w, wnid in enumerate(wnids):
        (root / "train" / wnid / "images").mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for k in range(3):
            image = np.full((8, 8, 3), 100 + 40 * w + 10 * k, dtype=np.uint8)
            Image.fromarray(image).save(root / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", quality=100)
    (root / "val" / "images").mkdir(parents=True)
    annotations = []
    for i, w in [(2, 1), (0, 0), (3, 0), (1, 1)]:  # the file's order is the evaluation set's
        Image.fromarray(np.full((8, 8, 3), 20 * i, dtype=np.uint8)).save(root / "val" / "images" / f"val_{i}.JPEG",
                                                                         quality=100)
        annotations.append(f"val_{i}.JPEG\t{wnids[w]}\t0\t0\t7\t7\n")
    (root / "val" / "val_annotations.txt").write_text("".join(annotations))
    a = load("tiny_imagenet", str(tmp_path))
    assert a.classes == sorted(wnids) and a.x_train.shape == (6, 8, 8, 3) and a.x_test.shape == (4, 8, 8, 3)
    assert a.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(a.x_train[:, 0, 0, 0], [140, 150, 160, 100, 110, 120], atol=2)  # JPEG
    assert a.y_test.tolist() == [0, 1, 1, 0]
    np.testing.assert_allclose(a.x_test[:, 0, 0, 0], [40, 0, 60, 20], atol=2)


def test_a_missing_evaluation_folder_or_npz_key_names_it(tmp_path):
    _write_cinic_tree(tmp_path, splits=("train", "test"), per_class=(2, 2))
    with pytest.raises(ValueError, match=r"data_root: cinic10 expects DATA_ROOT/cinic10/valid/<class>"):
        load("cinic10", str(tmp_path))
    assert len(load("cinic10", str(tmp_path), eval_split="test").y_test) == 4
    # an npz holds the evaluation split under x_<split> / y_<split>
    npz_root = tmp_path / "npz"
    npz_root.mkdir()
    _write_npz(npz_root / "cinic10.npz")
    with pytest.raises(ValueError, match=r"lacks the keys \['x_valid', 'y_valid'\] \(evaluation split 'valid'\)"):
        load("cinic10", str(npz_root))
    assert len(load("cinic10", str(npz_root), eval_split="test").y_test) == 10
    written = _write_npz(npz_root / "cinic10.npz", x_valid=np.zeros((4, 6, 6, 3), np.uint8),
                         y_valid=np.array([0, 1, 2, 2]))
    a = load("cinic10", str(npz_root))
    assert a.y_test.tolist() == [0, 1, 2, 2] and len(a.x_train) == len(written["x_train"])


def test_training_evaluates_on_the_configured_split(tmp_path):
    """The test split here holds only class 0, so class 1's accuracy is NaN exactly when training
    evaluates on it; the default (valid) split holds both classes."""
    from core.train import train

    _write_cinic_tree(tmp_path, per_class=(6, 2, 3))
    for image in (tmp_path / "cinic10" / "test" / "cat").iterdir():
        image.unlink()
    run = dict(dataset="cinic10", data_root=str(tmp_path), model="small_cnn", imbalance="balanced", epochs=1,
               batch_size=4, device="cpu")
    assert math.isfinite(train(run)["class_acc_1"])
    assert math.isnan(train({**run, "eval_split": "test"})["class_acc_1"])


def test_cifar10_without_a_data_root_fails_clearly_and_downloads_nothing(monkeypatch):
    import torchvision

    def no_download(*args, **kwargs):
        raise AssertionError("torchvision was asked for CIFAR-10")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", no_download)
    with pytest.raises(ValueError, match="data_root: CIFAR10 needs a data root") as err:
        load("cifar10", None)
    assert "--download" in str(err.value)


def test_cifar10_in_an_empty_data_root_fails_clearly_without_download(tmp_path, monkeypatch):
    import torchvision

    calls = []
    original = torchvision.datasets.CIFAR10

    def spy(root, download=False, **kw):
        calls.append(download)
        return original(root, download=download, **kw)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", spy)
    with pytest.raises(ValueError, match="not found under") as err:
        load("cifar10", str(tmp_path))
    assert str(tmp_path) in str(err.value) and calls == [False]
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- augmentation

def _images(b=64, c=3, h=8, w=8, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def augment(x, pad, flip, generator):
    return pad_crop_flip(x, pad, *draw_crops(len(x), pad, flip, generator, "cpu"))


def test_pad_crop_flip_keeps_the_shape_and_is_the_identity_without_pad_or_flip():
    x = _images()
    for pad, flip in [(0, False), (1, False), (4, True), (0, True)]:
        out = augment(x, pad, flip, _gen(0))
        assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(augment(x, 0, False, _gen(0)), x, rtol=0, atol=0)


@pytest.mark.parametrize("pad", [1, 4])
def test_pad_crop_flip_builds_its_indices_on_the_images_device(pad):
    # No GPU here: meta tensors have a device and no data, so an index built on the CPU by mistake
    # meets them and raises, as it would beside CUDA images.
    meta = torch.device("meta")
    x = torch.empty(4, 3, 8, 8, device=meta)
    out = pad_crop_flip(x, pad, torch.zeros(4, 2, dtype=torch.int64, device=meta),
                        torch.zeros(4, dtype=torch.bool, device=meta))
    assert out.device == meta and out.shape == x.shape


def _reference_matches(img, out_img, pad, flip):
    """(dy, dx, flipped) for which ``out_img`` is a crop of the zero-padded ``img``: a per-image loop."""
    c, h, w = img.shape
    padded = np.zeros((c, h + 2 * pad, w + 2 * pad), dtype=img.dtype)
    padded[:, pad:pad + h, pad:pad + w] = img
    found = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            for flipped in ([False, True] if flip else [False]):
                if np.array_equal(crop[:, :, ::-1] if flipped else crop, out_img):
                    found.append((dy, dx, flipped))
    return found


@pytest.mark.parametrize("pad, flip", [(1, False), (2, False), (2, True), (4, True)])
def test_every_output_is_a_crop_of_the_zero_padded_input(pad, flip):
    x = _images(b=200, h=6, w=7)
    drawn, coins = draw_crops(len(x), pad, flip, _gen(1), "cpu")
    out = pad_crop_flip(x, pad, drawn, coins).numpy()
    offsets = []
    for img, out_img, (dy, dx), coin in zip(x.numpy(), out, drawn.tolist(), coins.tolist()):
        found = _reference_matches(img, out_img, pad, flip)
        assert found == [(dy, dx, coin)]  # random pixels: exactly the drawn crop (and flip) matches
        offsets.append(found[0])
    dys = {o[0] for o in offsets}
    dxs = {o[1] for o in offsets}
    # every offset 0..2*pad is drawn (200 draws of 2*pad+1 values), the extremes included
    assert dys == set(range(2 * pad + 1)) and dxs == set(range(2 * pad + 1))
    # rows and columns have their own offsets
    assert any(dy != dx for dy, dx, _ in offsets)
    if flip:
        assert 0.3 < np.mean([f for _, _, f in offsets]) < 0.7


def test_flip_happens_for_about_half_of_the_images():
    x = _images(b=2000, c=1, h=4, w=4)
    out = augment(x, 0, True, _gen(2))
    flipped = (out == x.flip(3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped ^ kept).all()  # each image is either flipped or untouched
    assert 0.45 < flipped.float().mean().item() < 0.55
    assert not (out.flip(2) == x).flatten(1).all(1).any()  # never a vertical flip


def test_augmentation_follows_the_generator_only():
    x = _images()
    a = augment(x, 4, True, _gen(5))
    torch.manual_seed(123)  # the global RNG plays no part
    b = augment(x, 4, True, _gen(5))
    c = augment(x, 4, True, _gen(6))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


# ----------------------------------------------------------------------------- each dataset's constants

# The authors' training transforms (imbalanced-DL's ImbalancedDataset._get_data_transform, and
# ../shared/notes/reference-facts.md): (mean, std, pad, flip). RandomCrop(32, padding=4) or (64, 8) and
# RandomHorizontalFlip for every real dataset, SVHN included.
CIFAR_NORM = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
REFERENCE_TRANSFORMS = {
    "cifar10": (*CIFAR_NORM, 4, True),
    "cifar100": (*CIFAR_NORM, 4, True),
    "svhn": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 4, True),
    "cinic10": ((0.47889522, 0.47227842, 0.43047404), (0.24205776, 0.23828046, 0.25874835), 4, True),
    "tiny_imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 8, True),
    # the platform's own small datasets: no flip (a mirrored digit is another glyph)
    "digits": ((0.305,), (0.377,), 1, False),
    "synthetic": ((0.5,), (0.25,), 0, False),
}
# Per-class size of each dataset's full training split (reference-facts.md); SVHN's is fixed at 1000.
REFERENCE_N_MAX = {"cifar10": 5000, "cifar100": 500, "svhn": 1000, "cinic10": 9000, "tiny_imagenet": 500,
                   "digits": 120, "synthetic": 100}


def test_every_dataset_has_the_reference_transform():
    assert set(DATASETS) == set(REFERENCE_TRANSFORMS)
    for name, (mean, std, pad, flip) in REFERENCE_TRANSFORMS.items():
        spec = DATASETS[name]
        assert (spec.mean, spec.std, spec.pad, spec.flip) == (mean, std, pad, flip), name
    assert DATASETS["svhn"].count_order == (1, 2, 3, 4, 5, 6, 7, 8, 9, 0)
    assert all(DATASETS[n].count_order is None for n in DATASETS if n != "svhn")
    for name, n_max in REFERENCE_N_MAX.items():
        assert (DATASETS[name].max_per_class or DATASETS[name].full_per_class) == n_max, name
    # fixed n_max only where the reference fixes it; the others take len(train) / K of the full split
    assert {n for n in DATASETS if DATASETS[n].max_per_class} == {"svhn", "digits", "synthetic"}


def _standardised_crops(img, pad, flip, mean, std):
    """Every pad-crop(-flip) of the zero-padded [0, 1] image ``img`` (C, H, W), standardised."""
    c, h, w = img.shape
    padded = np.zeros((c, h + 2 * pad, w + 2 * pad))
    padded[:, pad:pad + h, pad:pad + w] = img
    mean, std = np.asarray(mean)[:, None, None], np.asarray(std)[:, None, None]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            for flipped in ([False, True] if flip else [False]):
                yield flipped, ((crop[:, :, ::-1] if flipped else crop) - mean) / std


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_training_batches_use_the_dataset_transform(name):
    """The user's path (DeviceData.train_images): each image is one pad-crop of the zero-padded image,
    flipped for about half of them where the dataset flips, standardised with the dataset's mean and std;
    test images are standardised only."""
    from core.data import Arrays, to_device

    spec = DATASETS[name]
    channels = len(spec.mean)
    x = np.random.default_rng(0).integers(0, 256, (60, 10, 10, channels), dtype=np.uint8)  # > pad: unique crops
    y = np.zeros(60, dtype=np.int64)
    data = to_device(x, y, Arrays(x, y, x, y, ["0"]), [60], spec, torch.device("cpu"))
    out = data.train_images(torch.arange(60), *draw_crops(60, spec.pad, spec.flip, _gen(0), "cpu")).numpy()
    flips = []
    for img, got in zip(x.transpose(0, 3, 1, 2) / 255.0, out):
        found = [f for f, want in _standardised_crops(img, spec.pad, spec.flip, spec.mean, spec.std)
                 if np.allclose(got, want, atol=1e-5)]
        assert len(found) == 1, (name, found)
        flips.append(found[0])
    assert (0.2 < np.mean(flips) < 0.8) if spec.flip else not any(flips)
    mean, std = np.asarray(spec.mean)[:, None, None], np.asarray(spec.std)[:, None, None]
    want_test = (x.transpose(0, 3, 1, 2) / 255.0 - mean) / std
    np.testing.assert_allclose(data.eval_inputs("test", slice(0, 60)).numpy(), want_test, atol=1e-5)


# ----------------------------------------------------------------------------- the real CIFAR-10

@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    if not os.path.isfile(TO_NPZ):
        pytest.skip(f"the offline CIFAR-10 copy is absent ({TO_NPZ} not found)")
    root = tmp_path_factory.mktemp("cifar10")
    npz = root / "cifar10.npz"  # 176 MiB: decoded once per module, removed afterwards
    subprocess.run([sys.executable, TO_NPZ, str(npz)], check=True, capture_output=True, timeout=300)
    yield str(root)
    npz.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def cifar(cifar_root):
    return load("cifar10", cifar_root)


def test_real_cifar10_loads_through_the_project_loader(cifar):
    assert cifar.x_train.shape == (50000, 32, 32, 3) and cifar.x_test.shape == (10000, 32, 32, 3)
    assert cifar.x_train.dtype == np.uint8 and cifar.x_test.dtype == np.uint8
    assert np.bincount(cifar.y_train).tolist() == [5000] * 10 and np.bincount(cifar.y_test).tolist() == [1000] * 10
    assert len(cifar.classes) == 10 and not cifar.presubsampled
    assert cifar.y_train[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]  # the original order (README)
    # RGB channel order and the usual per-channel means of the training part
    mean = cifar.x_train.reshape(-1, 3).mean(0) / 255.0
    np.testing.assert_allclose(mean, [0.4914, 0.4822, 0.4465], atol=1e-3)


def test_real_cifar10_long_tailed_and_step_subsets(cifar):
    spec = DATASETS["cifar10"]
    x, y, counts = imbalanced_arrays(cifar, spec, "long_tailed", 100, 0.5, subset_seed=0)
    assert counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert np.bincount(y).tolist() == counts and x.shape == (12406, 32, 32, 3)
    x_same, y_same, _ = imbalanced_arrays(cifar, spec, "long_tailed", 100, 0.5, subset_seed=0)
    x_other, y_other, _ = imbalanced_arrays(cifar, spec, "long_tailed", 100, 0.5, subset_seed=1)
    np.testing.assert_array_equal(x, x_same)
    np.testing.assert_array_equal(y, y_other)  # labels come class by class either way
    assert not np.array_equal(x, x_other)
    del x_same, x_other
    xs, ys, step = imbalanced_arrays(cifar, spec, "step", 100, 0.5, subset_seed=0)
    assert step == [5000] * 5 + [50] * 5 and np.bincount(ys).tolist() == step and len(xs) == 25250


def test_our_subset_is_the_published_ldam_drw_one(cifar, tmp_path):
    """to_npz.py --long-tailed 300 picks the subset the LDAM-DRW way; our imbalanced_indices must agree."""
    from core.data import training_counts
    from core.imbalance import imbalanced_indices

    npz = tmp_path / "cifar10.npz"
    subprocess.run([sys.executable, TO_NPZ, str(npz), "--long-tailed", "300"], check=True, capture_output=True,
                   timeout=300)
    with np.load(npz) as f:
        train_index = f["train_index"]
    lt = load("cifar10", str(tmp_path))
    npz.unlink()  # 54 MiB
    counts = training_counts(DATASETS["cifar10"], cifar, "long_tailed", 300, 0.5)
    assert counts == [5000, 2652, 1407, 746, 396, 210, 111, 59, 31, 16]
    np.testing.assert_array_equal(imbalanced_indices(cifar.y_train, counts, 0), train_index)
    # and the project loader uses such a file as it is, without subsampling it again, for ratio 300 only
    assert lt.presubsampled
    x, y, used = imbalanced_arrays(lt, DATASETS["cifar10"], "long_tailed", 300, 0.5, subset_seed=0)
    assert used == counts
    np.testing.assert_array_equal(x, cifar.x_train[train_index])
    assert len(lt.x_test) == 10000
    with pytest.raises(ValueError, match="imbalance/ratio:.*ratio=100 with the dataset's n_max=5000"):
        imbalanced_arrays(lt, DATASETS["cifar10"], "long_tailed", 100, 0.5, subset_seed=0)
