"""Tests of onebit.data.MNISTData: the IDX reader, where the files are found, splits, transforms and errors.

Nothing is downloaded and the Debian package is not needed: every test writes small IDX files (gzip, the real
format) into tmp_path, and the system folders are passed in explicitly.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CONF, run_train
from hydra.utils import instantiate
from omegaconf import OmegaConf

from onebit import data as D
from onebit.data import MNISTData, read_idx
from onebit.data import mnist as mnist_module
from onebit.records.record import read_record

N_TRAIN, N_TEST = 200, 50


def _idx(array: np.ndarray) -> bytes:
    magic = 0x0800 | array.ndim
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()


def write_mnist(folder: Path, n_train: int = N_TRAIN, n_test: int = N_TEST, gz: bool = True, seed: int = 0,
                hw: int = 28) -> Path:
    """The four IDX files of a small random MNIST-like set (labels cycle through 0..9)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        arrays = {f"{split}-images-idx3-ubyte": rng.integers(0, 256, (n, hw, hw), dtype=np.uint8),
                  f"{split}-labels-idx1-ubyte": (np.arange(n) % 10).astype(np.uint8)}
        for name, array in arrays.items():
            if gz:
                with gzip.open(folder / f"{name}.gz", "wb") as f:
                    f.write(_idx(array))
            else:
                (folder / name).write_bytes(_idx(array))
    return folder


def make(root, **kw) -> MNISTData:
    dm = MNISTData(root=str(root), **{"val_size": 40, "system_dirs": [], **kw})
    dm.setup()
    return dm


@pytest.fixture
def root(tmp_path) -> Path:
    return write_mnist(tmp_path / "fm")


# --------------------------------------------------------------------------------------------------- reader
def test_read_idx_values_and_uncompressed(tmp_path):
    write_mnist(tmp_path / "gz")
    write_mnist(tmp_path / "raw", gz=False)
    a = read_idx(tmp_path / "gz" / "train-images-idx3-ubyte.gz", 3)
    b = read_idx(tmp_path / "raw" / "train-images-idx3-ubyte", 3)
    assert a.shape == (N_TRAIN, 28, 28) and a.dtype == np.uint8 and np.array_equal(a, b)
    labels = read_idx(tmp_path / "gz" / "t10k-labels-idx1-ubyte.gz", 1)
    assert labels.tolist() == [i % 10 for i in range(N_TEST)]
    assert read_idx(tmp_path / "gz" / "train-images-idx3-ubyte.gz", 3) is a  # cached per process


def test_read_idx_errors_name_the_file(tmp_path):
    folder = write_mnist(tmp_path, gz=False)
    images = folder / "train-images-idx3-ubyte"
    raw = images.read_bytes()
    images.write_bytes(raw[:-7])  # truncated
    with pytest.raises(ValueError, match=f"^{images} is truncated: {N_TRAIN * 784 - 7} data bytes, the header "
                                         rf"\({N_TRAIN} x 28 x 28\) needs {N_TRAIN * 784}$"):
        read_idx(images, 3)
    images.write_bytes(raw + b"x")
    with pytest.raises(ValueError, match=f"^{images} is longer than its header says"):
        read_idx(images, 3)
    labels = folder / "train-labels-idx1-ubyte"
    with pytest.raises(ValueError, match=f"^{labels} is not an IDX image file: magic number 0x00000801, "
                                         "expected 0x00000803$"):
        read_idx(labels, 3)
    images.write_bytes(raw[:10])
    with pytest.raises(ValueError, match=f"^{images} is truncated: 10 bytes, shorter than its 16-byte IDX header"):
        read_idx(images, 3)
    bad_gz = tmp_path / "x-ubyte.gz"
    bad_gz.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=f"^{bad_gz} is not a readable gzip file .*data.download=true"):
        read_idx(bad_gz, 1)
    good = gzip.compress(_idx(np.zeros(5, np.uint8)))
    bad_gz.write_bytes(good[:-6])  # gzip stream cut short
    with pytest.raises(ValueError, match=f"^{bad_gz} is not a readable gzip file"):
        read_idx(bad_gz, 1)


def test_corrupt_file_in_a_data_module_names_it(root):
    bad = root / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(_idx(np.zeros((3, 28, 28), np.uint8)))[:-20] + b"\0" * 3)
    with pytest.raises(ValueError, match=f"^{bad} is not a readable gzip file"):
        make(root)


def test_counts_that_disagree(tmp_path):
    folder = write_mnist(tmp_path)
    labels = folder / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(_idx(np.zeros(N_TRAIN - 1, np.uint8))))
    with pytest.raises(ValueError, match=f"^{labels} holds {N_TRAIN - 1} labels but "
                                         f"{folder / 'train-images-idx3-ubyte.gz'} holds {N_TRAIN} images$"):
        make(folder)
    labels.write_bytes(gzip.compress(_idx(np.full(N_TRAIN, 10, np.uint8))))
    with pytest.raises(ValueError, match="holds label 10: labels must be 0..9"):
        make(folder)


# ---------------------------------------------------------------------------------------- splits/transforms
def test_attributes_before_setup():
    dm = MNISTData(variant="kmnist", system_dirs=[])
    assert (dm.name, dm.in_channels, dm.num_classes, dm.input_size, dm.stem) == ("kmnist", 1, 10, (1, 28, 28),
                                                                                 "small")
    assert (dm.default_width, dm.batch_size, dm.val_size, dm.download, dm.root) == (32, 128, 5000, False, None)
    assert MNISTData(size=112).input_size == (1, 112, 112)


def test_split_sizes_shapes_and_labels(root):
    dm = make(root)
    sizes = {k: len(v[1]) for k, v in dm.splits.items()}
    assert sizes == {"train": N_TRAIN - 40, "val": 40, "test": N_TEST}
    assert dm.splits["train"][0].shape == (N_TRAIN - 40, 1, 28, 28) and dm.splits["train"][0].dtype == torch.float32
    assert dm.splits["train"][1].dtype == torch.int64
    tr, va = dm.split_indices["train"], dm.split_indices["val"]
    assert len(set(tr) | set(va)) == N_TRAIN and not set(tr) & set(va)
    labels = np.arange(N_TRAIN) % 10
    assert dm.splits["val"][1].tolist() == labels[va].tolist()
    # pixels: raw / 255 standardised with the train split's stats
    raw = read_idx(root / "train-images-idx3-ubyte.gz", 3)
    expected = (torch.from_numpy(raw[va]).float().unsqueeze(1) / 255 - dm.mean) / dm.std
    torch.testing.assert_close(dm.splits["val"][0], expected)
    x = dm.splits["train"][0]
    assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1) < 1e-4
    assert dm.mean == pytest.approx(raw[tr].mean() / 255) and dm.std == pytest.approx((raw[tr] / 255).std(ddof=1))


def test_val_size_zero_validates_on_test(root):
    dm = make(root, val_size=0)
    assert len(dm.splits["train"][1]) == N_TRAIN and dm.splits["val"] is dm.splits["test"]


def test_split_and_subset_fixed_by_split_seed_not_seed(root):
    a, b = make(root, seed=0, train_subset=30), make(root, seed=5, train_subset=30)
    for split in ("train", "val"):
        assert np.array_equal(a.split_indices[split], b.split_indices[split])
        assert torch.equal(a.splits[split][0], b.splits[split][0])
    full = make(root, seed=3)
    assert np.array_equal(full.split_indices["train"][:30], a.split_indices["train"])  # the first 30 of the split
    assert np.array_equal(full.split_indices["val"], a.split_indices["val"])
    c = make(root, split_seed=1, train_subset=30)
    assert not np.array_equal(c.split_indices["val"], a.split_indices["val"])
    assert len(a.splits["train"][1]) == 30
    x = a.splits["train"][0]  # standardised with the subset's own statistics
    assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1) < 1e-4
    # shuffling follows seed
    order = lambda dm: torch.cat([y for _, y in dm.train_dataloader()])
    assert not torch.equal(order(make(root, seed=0, batch_size=16)), order(make(root, seed=1, batch_size=16)))
    assert torch.equal(order(make(root, seed=4, batch_size=16)), order(make(root, seed=4, batch_size=16)))


@pytest.mark.parametrize("size", [14, 40])
def test_size_resizes_bilinear(root, size):
    dm = make(root, size=size)
    assert dm.input_size == (1, size, size)
    assert all(x.shape[1:] == (1, size, size) for x, _ in dm.splits.values())
    raw = read_idx(root / "t10k-images-idx3-ubyte.gz", 3)
    x = torch.from_numpy(raw.copy()).float().unsqueeze(1) / 255  # read_idx arrays are read-only (cached)
    expected = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < 28)
    torch.testing.assert_close(dm.splits["test"][0], (expected - dm.mean) / dm.std)
    x = dm.splits["train"][0]
    assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1) < 1e-4


def test_batches(root):
    dm = make(root, batch_size=64)
    batches = list(dm.train_dataloader())
    assert [len(y) for _, y in batches] == [64, 64, 32]
    assert [len(y) for _, y in dm.test_dataloader()] == [50]


def test_validation_messages(root):
    cases = [
        ({"variant": "emnist"}, r"data.variant='emnist' is invalid: choose one of mnist, fashion_mnist, kmnist"),
        ({"val_size": -1}, r"data.val_size=-1 is invalid: must be an integer >= 0"),
        ({"train_subset": 0}, r"data.train_subset=0 is invalid: must be a positive integer"),
        ({"size": 2.5}, r"data.size=2.5 is invalid: must be a positive integer"),
        ({"batch_size": 0}, r"data.batch_size=0 is invalid"),
        ({"stem": "big"}, r"data.stem='big' is invalid: choose one of small, imagenet"),
        ({"download": "yes"}, r"data.download='yes' is invalid: choose one of true, false"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=f"^{message}"):
            MNISTData(root=str(root), **kwargs)
    with pytest.raises(ValueError, match=f"^data.val_size={N_TRAIN} is invalid: must be below the {N_TRAIN} "
                                         "training images"):
        make(root, val_size=N_TRAIN)
    with pytest.raises(ValueError, match="^data.train_subset=161 is invalid: must be at most the 160 images of "
                                         r"the training split \(200 - data.val_size=40\)$"):
        make(root, train_subset=161)
    small = write_mnist(root.parent / "small", hw=20)
    with pytest.raises(ValueError, match="holds 20x20 images, not 28x28: set data.size"):
        make(small)
    assert make(small, size=28).input_size == (1, 28, 28)


# ------------------------------------------------------------------------------------------ where from
def test_where_from_line_and_torchvision_layout(tmp_path, caplog):
    write_mnist(tmp_path / "tv" / "FashionMNIST" / "raw", gz=False)
    with caplog.at_level(logging.INFO, logger="onebit"):
        dm = make(tmp_path / "tv", train_subset=100)
    assert dm.source == (tmp_path / "tv" / "FashionMNIST" / "raw", "data.root")
    lines = [r.getMessage() for r in caplog.records if r.name == "onebit"]
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    assert lines == [(f"fashion_mnist: {N_TRAIN} train / {N_TEST} test images from {raw} (data.root); "
                      f"split 100 train (data.train_subset=100) / 40 val / {N_TEST} test")]
    write_mnist(tmp_path / "k" / "KMNIST" / "raw")
    assert make(tmp_path / "k", variant="kmnist").source[0] == tmp_path / "k" / "KMNIST" / "raw"


def test_system_dir_then_default_folder(tmp_path, monkeypatch, caplog):
    """root=null: the system folder (Debian's for fashion_mnist) first, then $ONEBIT_DATA/<variant>."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ONEBIT_DATA", raising=False)
    debian = write_mnist(tmp_path / "usr" / "fashion-mnist", seed=1)
    write_mnist(tmp_path / "data" / "fashion_mnist", seed=2)
    with caplog.at_level(logging.INFO, logger="onebit"):
        dm = MNISTData(val_size=10, system_dirs=[str(debian)])
        dm.setup()
    assert dm.source == (debian, "system folder")
    assert f"images from {debian} (system folder)" in caplog.text
    dm = MNISTData(val_size=10, system_dirs=[str(tmp_path / "empty")])
    dm.setup()
    # the default folder is the launch directory's (absolute: a job that changed directory reads the same one)
    assert dm.source == (tmp_path / "data" / "fashion_mnist", "default folder")
    monkeypatch.setenv("ONEBIT_DATA", str(tmp_path / "usr"))
    write_mnist(tmp_path / "usr" / "mnist")
    dm = MNISTData(variant="mnist", val_size=10)
    dm.setup()
    assert dm.source == (tmp_path / "usr" / "mnist", "default folder")
    # the module's own list names the Debian package
    assert D.MNIST_SYSTEM_DIRS["fashion_mnist"] == (("/usr/share/datasets/fashion-mnist",
                                                    "Debian package dataset-fashion-mnist"),)
    assert MNISTData().system_dirs == [(Path("/usr/share/datasets/fashion-mnist"),
                                        "Debian package dataset-fashion-mnist")]
    assert MNISTData(variant="mnist").system_dirs == []


def test_missing_data_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ONEBIT_DATA", raising=False)
    debian = tmp_path / "debian"
    with pytest.raises(FileNotFoundError) as err:
        MNISTData(val_size=10, system_dirs=[str(debian)]).setup()
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith("fashion_mnist: no IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],"
                           " t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) found in "
                           f"{debian}, {debian / 'FashionMNIST' / 'raw'}, {tmp_path / 'data' / 'fashion_mnist'}, "
                           f"{tmp_path / 'data' / 'fashion_mnist' / 'FashionMNIST' / 'raw'}; ")
    assert line.endswith("set data.download=true (needs network), or apt-get install dataset-fashion-mnist, "
                         "or point data.root at a folder holding the four IDX files")
    # a folder with some files: says which are missing; no apt-get for mnist
    folder = write_mnist(tmp_path / "part")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        MNISTData(variant="mnist", root=str(folder)).setup()
    line = str(err.value)
    assert f"found in {folder}, {folder / 'MNIST' / 'raw'} ({folder} lacks t10k-labels-idx1-ubyte);" in line
    assert "apt-get" not in line and "data.download=true" in line and "data.root" in line


def test_download_uses_torchvision(tmp_path, monkeypatch):
    """download=true hands the folder to torchvision.datasets.<Class>(root, download=True) (stubbed: no network)."""
    calls = []

    class FakeFashion:
        def __init__(self, root, train=True, download=False):
            calls.append((root, download))
            write_mnist(Path(root) / "FashionMNIST" / "raw")

    monkeypatch.setattr(mnist_module.datasets, "FashionMNIST", FakeFashion)
    dm = MNISTData(root=str(tmp_path / "dl"), download=True, val_size=10, system_dirs=[])
    dm.prepare_data()
    dm.setup()
    assert calls == [(str(tmp_path / "dl"), True)]  # setup finds the files prepare_data fetched
    assert dm.source == (tmp_path / "dl" / "FashionMNIST" / "raw", "data.root")

    class Offline:
        def __init__(self, root, train=True, download=False):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://..., got:\n<urlopen "
                               "error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(mnist_module.datasets, "KMNIST", Offline)
    with pytest.raises(RuntimeError, match=f"^could not download kmnist into {tmp_path / 'k'}: RuntimeError: "
                                           "Error downloading .* name resolution>$"):
        MNISTData(variant="kmnist", root=str(tmp_path / "k"), download=True).setup()


# ------------------------------------------------------------------------------------------- configs / CLI
@pytest.mark.parametrize("variant", ["mnist", "fashion_mnist", "kmnist"])
def test_yaml_configs(variant):
    cfg = OmegaConf.create({"seed": 7, "data": OmegaConf.load(CONF / "data" / f"{variant}.yaml")})
    dm = instantiate(cfg.data)
    assert isinstance(dm, MNISTData) and (dm.variant, dm.seed, dm.root, dm.download) == (variant, 7, None, False)
    assert (dm.val_size, dm.split_seed, dm.train_subset, dm.size, dm.batch_size, dm.stem) == (
        5000, 0, None, None, 128, "small")


def test_train_script_end_to_end(tmp_path):
    root = write_mnist(tmp_path / "fm")
    out = tmp_path / "out"
    r = run_train(["data=fashion_mnist", f"data.root={root}", "data.val_size=50", "model.width=8", "epochs=1",
                   "pretrain.epochs=1", "logger=none", f"output_root={out}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"fashion_mnist: {N_TRAIN} train / {N_TEST} test images from {root} (data.root)" in r.stdout + r.stderr
    records = [read_record(p) for p in out.rglob("record.json")]
    assert len(records) == 1 and records[0].status == "finished"
    assert records[0].config["data"]["variant"] == "fashion_mnist"
    assert all(stage.finished for stage in records[0].stages.values())
