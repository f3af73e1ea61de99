"""`python -m core.prepare_data` turns a downloaded CIFAR-10 (archive, unpacked folder or torchvision
root) into the npz the loader reads first; checked on a tiny fake cifar-10-batches-py written here."""

import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from core import prepare_data
from core.data import load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN, TEST = [3, 2, 4, 1, 2], 5  # images per training batch file, in the test batch


def write_batch(path, rng, n):
    """A batch file as the dataset ships it: a pickled dict of a (n, 3072) uint8 array and labels."""
    batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"labels": [int(y) for y in rng.integers(0, 10, n)]}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    return batch


@pytest.fixture
def download(tmp_path):
    """A torchvision root holding a fake cifar-10-batches-py folder, and the batches written."""
    folder = tmp_path / "torchvision" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train = [write_batch(folder / f"data_batch_{i + 1}", rng, n) for i, n in enumerate(TRAIN)]
    test = write_batch(folder / "test_batch", rng, TEST)
    return folder, train, test


def prepare(*args):
    """The command as a user runs it."""
    return subprocess.run([sys.executable, "-m", "core.prepare_data", "cifar10", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_every_form_of_the_download_gives_the_arrays_the_loader_reads(download, tmp_path):
    folder, train, test = download
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(folder, arcname="cifar-10-batches-py")
    done = prepare("--from", str(tmp_path / "cifar-10-python.tar.gz"), "--out", str(tmp_path / "data0" / "cifar10.npz"))
    assert done.returncode == 0, done.stderr
    assert f"--data-root {tmp_path / 'data0'}" in done.stdout
    for i, source in enumerate([folder, folder.parent], start=1):  # the unpacked folder, a torchvision root
        prepare_data.main(["cifar10", "--from", str(source), "--out", str(tmp_path / f"data{i}" / "cifar10.npz")])
    for i in range(3):
        root = tmp_path / f"data{i}"
        arrays = load("cifar10", str(root))  # what a sweep with --data-root reads
        assert arrays.x_train.shape == (sum(TRAIN), 32, 32, 3) and arrays.x_test.shape == (TEST, 32, 32, 3)
        assert arrays.y_train.tolist() == [y for b in train for y in b[b"labels"]]
        assert arrays.y_test.tolist() == list(test[b"labels"])
        # pixel (row 5, column 7) of the 4th training image: red, green, blue planes of 1024 bytes each
        row = train[1][b"data"][0]
        assert arrays.x_train[3, 5, 7].tolist() == [row[5 * 32 + 7], row[1024 + 5 * 32 + 7], row[2048 + 5 * 32 + 7]]
        assert os.listdir(root) == ["cifar10.npz"]


def test_a_wrong_folder_or_a_tampered_file_stops_with_one_line(download, tmp_path):
    folder, _, _ = download
    out = str(tmp_path / "cifar10.npz")
    with pytest.raises(SystemExit) as stopped:
        prepare_data.main(["cifar10", "--from", str(tmp_path / "nothing"), "--out", out])
    assert str(stopped.value).startswith("error: from: ") and "cifar-10-batches-py" in str(stopped.value)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": os.system, b"labels": []}, f)  # a pickle that would call a function
    with pytest.raises(SystemExit) as stopped:
        prepare_data.main(["cifar10", "--from", str(folder), "--out", out])
    assert str(stopped.value).startswith("error: from: test_batch is not a CIFAR batch file")
    assert "only arrays" in str(stopped.value) and len(str(stopped.value).splitlines()) == 1
    assert not os.path.exists(out)
