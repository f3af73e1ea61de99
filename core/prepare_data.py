"""Turn a downloaded copy of CIFAR-10 or CIFAR-100 into the ``<data-root>/<name>.npz`` file that
``core.data.load`` reads first, for machines that cannot download it themselves.

    python -m core.prepare_data cifar10 --from cifar-10-python.tar.gz --out /abs/data/cifar10.npz
    python -m core.prepare_data cifar10 --from /abs/torchvision-root --out /abs/data/cifar10.npz

``--from`` takes any of the forms the dataset comes in: the "python version" archive from the
dataset's page (https://www.cs.toronto.edu/~kriz/cifar.html: cifar-10-python.tar.gz,
cifar-100-python.tar.gz), the folder it unpacks to (cifar-10-batches-py, cifar-100-python), or a
torchvision root holding that folder (what ``--download`` fetched elsewhere). The npz holds
x_train, y_train, x_test, y_test: images NHWC uint8 in the original order, labels int64.

The batch files are Python pickles; they are read with an unpickler that builds only numpy arrays,
lists and dicts, so a tampered file cannot run code.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data import Arrays, check_arrays


@dataclass(frozen=True)
class PythonBatches:
    """Where a dataset's "python version" keeps its splits."""
    folder: str  # what the archive unpacks to
    train: tuple[str, ...]  # batch files of the training split, in order
    test: tuple[str, ...]
    label_key: bytes
    num_classes: int


SOURCES = {
    "cifar10": PythonBatches("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                             b"labels", 10),
    "cifar100": PythonBatches("cifar-100-python", ("train",), ("test",), b"fine_labels", 100),
}
# What a CIFAR batch pickle may build: numpy arrays (written by numpy 1 or 2) and, in protocol-2
# pickles written by Python 3, their bytes; nothing else.
ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
           ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"a CIFAR batch holds only arrays; found {module}.{name}")
        return super().find_class(module, name)


def read_batches(source: str, spec: PythonBatches) -> dict[str, bytes]:
    """The bytes of every batch file, from whichever form ``source`` takes."""
    names = spec.train + spec.test
    if os.path.isfile(source) and tarfile.is_tarfile(source):
        with tarfile.open(source) as archive:
            files = {}
            for name in names:
                try:
                    files[name] = archive.extractfile(f"{spec.folder}/{name}").read()
                except (KeyError, AttributeError):
                    raise ValueError(f"from: {source} has no {spec.folder}/{name}") from None
            return files
    for folder in (os.path.join(source, spec.folder), source):
        if all(os.path.isfile(os.path.join(folder, name)) for name in names):
            return {name: Path(folder, name).read_bytes() for name in names}
    raise ValueError(f"from: {source} is neither the {spec.folder} folder (with {', '.join(names)}), "
                     f"a folder holding it (a torchvision root), nor the dataset's .tar.gz archive")


def read_split(files: dict[str, bytes], names: tuple[str, ...], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 and labels of the batch files ``names``, concatenated in order."""
    xs, ys = [], []
    for name in names:
        try:
            batch = _ArrayUnpickler(io.BytesIO(files[name]), encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError) as err:
            raise ValueError(f"from: {name} is not a CIFAR batch file ({err})") from None
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # rows are R, G, B planes of 32x32
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)


def prepare(name: str, source: str, out: str) -> Arrays:
    """Read the dataset ``name`` from ``source`` and write it to ``out`` (an .npz path); returns it."""
    if name not in SOURCES:
        raise ValueError(f"dataset: {name!r} cannot be prepared from a download; allowed: {sorted(SOURCES)}")
    if not out.endswith(".npz"):
        raise ValueError(f"out: {out} must end in .npz (the loader reads <data-root>/{name}.npz)")
    spec = SOURCES[name]
    files = read_batches(source, spec)
    (x_train, y_train), (x_test, y_test) = (read_split(files, names, spec.label_key) for names in (spec.train, spec.test))
    arrays = Arrays(x_train, y_train, x_test, y_test, [str(c) for c in range(spec.num_classes)])
    check_arrays(arrays, name)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    partial = out[:-len(".npz")] + ".partial.npz"  # never a half-written file under the loader's name
    np.savez(partial, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    os.replace(partial, out)
    return arrays


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=sorted(SOURCES))
    p.add_argument("--from", dest="source", required=True,
                   help="the .tar.gz archive, its unpacked folder, or a torchvision root holding that folder")
    p.add_argument("--out", required=True, help="<data-root>/<dataset>.npz")
    args = p.parse_args(argv)
    try:
        arrays = prepare(args.dataset, args.source, args.out)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"wrote {args.out}: {len(arrays.y_train)} training and {len(arrays.y_test)} test images "
          f"of {arrays.x_train.shape[1]}x{arrays.x_train.shape[2]}; train with --data-root "
          f"{os.path.dirname(os.path.abspath(args.out))}")


if __name__ == "__main__":
    main()
