"""Tests of onebit.data: splits, statistics, determinism, DDP sharding, on-disk formats and error messages.

Nothing is downloaded: CIFAR and ImageFolder trees are written to tmp_path in the real on-disk formats.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from onebit import data as D
from onebit.data import CIFARData, DigitsData, FolderData, ImageNetData, TensorBatches, common, shard_indices
from onebit.data.images import _jpeg_decoder, _ToGray

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"


# ---------------------------------------------------------------------------------------------------- digits
@pytest.fixture(scope="module")
def digits() -> DigitsData:
    dm = DigitsData(seed=0)
    dm.setup()
    return dm


def test_digits_attributes_before_setup():
    dm = DigitsData()
    assert (dm.name, dm.in_channels, dm.num_classes, dm.input_size, dm.stem) == ("digits", 1, 10, (1, 8, 8), "small")
    assert dm.splits == {}


def test_digits_split_sizes_and_stratification(digits):
    sizes = {k: len(v[1]) for k, v in digits.splits.items()}
    assert sum(sizes.values()) == 1797
    assert sizes == {"train": 1257, "val": 270, "test": 270}
    all_y = torch.cat([y for _, y in digits.splits.values()])
    overall = torch.bincount(all_y, minlength=10).double() / len(all_y)
    for split, (x, y) in digits.splits.items():
        assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32
        share = torch.bincount(y, minlength=10).double() / len(y)
        assert (share - overall).abs().max().item() < 0.02, split


def test_digits_splits_disjoint_and_standardised(digits):
    rows = np.concatenate(list(digits.split_indices.values()))
    assert sorted(rows.tolist()) == list(range(1797))  # disjoint and covering
    from sklearn.datasets import load_digits
    raw = load_digits()
    test_rows = digits.split_indices["test"]
    assert np.array_equal(digits.splits["test"][1].numpy(), raw.target[test_rows])
    expected = (torch.from_numpy(raw.images[test_rows]).float() / 16 - digits.mean) / digits.std
    assert torch.allclose(digits.splits["test"][0][:, 0], expected, atol=1e-5)
    x = digits.splits["train"][0]
    assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1) < 1e-4
    raw_max = (1.0 - digits.mean) / digits.std  # a pixel of 16/16 after standardisation
    assert torch.isclose(x.max(), torch.tensor(raw_max), atol=1e-5)
    assert 0.2 < digits.mean < 0.4 and 0.3 < digits.std < 0.5  # stats of pixels scaled to [0, 1]


def _order(dm: DigitsData, epochs: int = 2) -> list[torch.Tensor]:
    loader = dm.train_dataloader()
    return [torch.cat([x.flatten(1)[:, :8] for x, _ in loader]) for _ in range(epochs)]


def test_digits_batches_deterministic_by_seed():
    a, b, c = DigitsData(seed=1), DigitsData(seed=1), DigitsData(seed=2)
    oa, ob, oc = _order(a), _order(b), _order(c)
    assert all(torch.equal(u, v) for u, v in zip(oa, ob))  # same seed, same order every epoch
    assert not torch.equal(oa[0], oc[0])  # another seed, another order
    assert not torch.equal(oa[0], oa[1])  # a new order every epoch
    assert a.train_dataloader().epoch == 2  # advanced once per pass
    # the split does not depend on the training seed
    for split in ("train", "val", "test"):
        assert all(torch.equal(u, v) for u, v in zip(a.splits[split], c.splits[split]))
    # but does on split_seed
    assert not torch.equal(DigitsData(split_seed=1).test_dataloader().y, a.test_dataloader().y)


def test_digits_loader_batches(digits):
    train, val = digits.train_dataloader(), digits.val_dataloader()
    assert len(train) == 20 and len(val) == 5  # ceil(1257 / 64), ceil(270 / 64): drop_last=False
    sizes = [len(y) for _, y in train]
    assert sizes == [64] * 19 + [1257 - 19 * 64]
    ys = torch.cat([y for _, y in val])
    assert torch.equal(ys, digits.splits["val"][1])  # val not shuffled
    assert torch.equal(torch.cat([y for _, y in val]), ys)  # and the same every pass
    assert sorted(torch.cat([y for _, y in train]).tolist()) == sorted(digits.splits["train"][1].tolist())


def test_digits_set_epoch_matches_counter():
    dm = DigitsData(seed=5)
    loader = dm.train_dataloader()
    first, second = [torch.cat([y for _, y in loader]) for _ in range(2)]
    loader.set_epoch(1)
    assert torch.equal(torch.cat([y for _, y in loader]), second)
    assert loader.sampler is loader and loader.epoch == 2
    it = iter(loader)  # iter() alone does not consume an epoch
    assert loader.epoch == 2
    del it


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_digits_upscale(mode):
    dm = DigitsData(upscale=4, upscale_mode=mode)
    assert dm.input_size == (1, 32, 32)
    x, _ = next(iter(dm.val_dataloader()))
    assert tuple(x.shape[1:]) == dm.input_size
    train = dm.splits["train"][0]
    assert abs(train.mean().item()) < 1e-5 and abs(train.std().item() - 1) < 1e-4
    if mode == "nearest":  # each source pixel becomes a 4x4 block
        assert torch.equal(x[:, :, ::4, ::4].repeat_interleave(4, 2).repeat_interleave(4, 3), x)


def test_shard_indices_disjoint_and_covering():
    perm = torch.randperm(103, generator=torch.Generator().manual_seed(0))
    for world in (1, 2, 3, 4):
        shards = [shard_indices(perm, r, world) for r in range(world)]
        flat = torch.cat(shards).tolist()
        assert sorted(flat) == list(range(103)) and len(set(flat)) == 103
        assert torch.equal(shards[0], perm[0::world])
        even = [shard_indices(perm, r, world, even=True) for r in range(world)]
        assert len({len(s) for s in even}) == 1 and len(even[0]) == 103 // world
        assert len(set(torch.cat(even).tolist())) == world * (103 // world)
    with pytest.raises(ValueError):
        shard_indices(perm, 2, 2)


def test_tensor_batches_under_simulated_ddp(monkeypatch):
    x = torch.arange(50).float().unsqueeze(1)
    y = torch.arange(50)
    seen = {}
    for shuffle in (True, False):
        for rank in range(3):
            monkeypatch.setattr(common, "_dist_rank_world", lambda rank=rank: (rank, 3))
            loader = TensorBatches(x, y, batch_size=4, shuffle=shuffle, seed=9)
            ys = [b for _, b in loader]
            assert len(loader) == len(ys)
            seen[shuffle, rank] = torch.cat(ys).tolist()
    train = [seen[True, r] for r in range(3)]
    assert all(len(s) == 16 for s in train)  # 50 // 3 each: same number of steps on every rank
    assert len(set(sum(train, []))) == 48  # disjoint
    evals = [seen[False, r] for r in range(3)]
    assert sorted(sum(evals, [])) == list(range(50))  # val/test: disjoint and covering
    assert evals[1] == list(range(1, 50, 3))


def test_digits_validation_messages():
    with pytest.raises(ValueError, match=r"data\.batch_size=0 is invalid: must be a positive integer"):
        DigitsData(batch_size=0)
    with pytest.raises(ValueError, match=r"data\.upscale=0 is invalid"):
        DigitsData(upscale=0)
    with pytest.raises(ValueError, match=r"data\.upscale_mode='cubic' is invalid: choose one of nearest, bilinear"):
        DigitsData(upscale_mode="cubic")
    with pytest.raises(ValueError, match=r"data\.stem='big' is invalid: choose one of small, imagenet"):
        DigitsData(stem="big")
    with pytest.raises(ValueError, match=r"data\.val_fraction"):
        DigitsData(val_fraction=1.5)


def test_digits_in_lightning_trainer(tmp_path):
    """Lightning accepts TensorBatches and sets its epoch before each training epoch, also after a resume."""
    import pytorch_lightning as pl

    class Probe(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)
            self.first = []

        def training_step(self, batch, i):
            if i == 0:
                self.first.append(batch[1].clone())
            return torch.nn.functional.cross_entropy(self.fc(batch[0].flatten(1)), batch[1])

        def validation_step(self, batch, i):
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def trainer(epochs):
        return pl.Trainer(max_epochs=epochs, limit_train_batches=2, limit_val_batches=1, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                          accelerator="cpu", devices=1)

    dm, probe = DigitsData(seed=3, batch_size=16), Probe()
    first = trainer(1)
    first.fit(probe, datamodule=dm)
    first.save_checkpoint(tmp_path / "epoch1.ckpt")
    # resuming with a fresh data module continues with epoch 1's order (Lightning calls set_epoch)
    dm2, probe2 = DigitsData(seed=3, batch_size=16), Probe()
    trainer(2).fit(probe2, datamodule=dm2, ckpt_path=tmp_path / "epoch1.ckpt")
    loader = dm.train_dataloader()
    y = dm.splits["train"][1]
    assert torch.equal(probe.first[0], y[loader.indices(0)[:16]])
    assert len(probe2.first) == 1 and torch.equal(probe2.first[0], y[loader.indices(1)[:16]])


# ----------------------------------------------------------------------------------------------------- CIFAR
def _write_fake_cifar10(root: Path, per_batch: int = 20, n_test: int = 20) -> None:
    """CIFAR-10's python format: pickled dicts with ``data`` uint8 (n, 3072) and ``labels`` lists."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": [i % 10 for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


def test_cifar_fake_dataset(tmp_path):
    _write_fake_cifar10(tmp_path)
    dm = CIFARData(root=str(tmp_path), verify=False, val_size=30, batch_size=8, num_workers=0)
    assert (dm.name, dm.num_classes, dm.in_channels, dm.input_size) == ("cifar10", 10, 3, (3, 32, 32))
    dm.setup()
    assert (len(dm._train), len(dm._val), len(dm._test)) == (70, 30, 20)
    assert not set(dm._train.indices) & set(dm._val.indices)
    for loader, n in ((dm.train_dataloader(), 70), (dm.val_dataloader(), 30), (dm.test_dataloader(), 20)):
        xs, ys = zip(*loader)
        x, y = torch.cat(xs), torch.cat(ys)
        assert x.shape == (n, 3, 32, 32) and x.dtype == torch.float32
        assert y.min() >= 0 and y.max() < 10
    # val is not augmented: the same tensors twice, and equal to the normalised raw image
    v1, v2 = next(iter(dm.val_dataloader()))[0], next(iter(dm.val_dataloader()))[0]
    assert torch.equal(v1, v2)
    raw = torch.from_numpy(dm._val.dataset.data[dm._val.indices[0]]).permute(2, 0, 1).float() / 255
    mean, std = (torch.tensor(s).view(3, 1, 1) for s in D.CIFAR_STATS["cifar10"])
    assert torch.allclose(v1[0], (raw - mean) / std, atol=1e-5)
    # the split is fixed by split_seed, not by the training seed
    other = CIFARData(root=str(tmp_path), verify=False, val_size=30, seed=7)
    other.setup()
    assert other._val.indices == dm._val.indices


def test_cifar_md5_check_is_kept_by_default(tmp_path):
    _write_fake_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match="md5") as err:
        CIFARData(root=str(tmp_path)).setup()
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_cifar_missing_root_message(tmp_path):
    root = tmp_path / "nowhere" / "cifar10"
    with pytest.raises(FileNotFoundError) as err:
        CIFARData(root=str(root)).setup()
    msg = str(err.value)
    assert "\n" not in msg and f"data.root='{root}'" in msg
    assert "cifar-10-batches-py/" in msg and "data.download=true" in msg
    with pytest.raises(FileNotFoundError, match="cifar-100-python/"):
        CIFARData(variant="cifar100", root=str(root), verify=False).setup()


def test_cifar_validation_messages():
    with pytest.raises(ValueError, match=r"data\.variant='cifar50' is invalid: choose one of cifar10, cifar100"):
        CIFARData(variant="cifar50")
    with pytest.raises(ValueError, match=r"data\.num_workers=-1 is invalid"):
        CIFARData(num_workers=-1)
    assert CIFARData(variant="cifar100").num_classes == 100


# ---------------------------------------------------------------------------------------------- ImageFolder
def _write_tree(root: Path, splits=("train", "val"), classes=("cat", "dog"), n=3, ext="png") -> None:
    from conftest import image_folder

    image_folder(root, splits, classes, n, size=(30, 40), ext=ext)  # 40 wide, 30 high


def test_imagenet_tree(tmp_path):
    _write_tree(tmp_path, ext="JPEG")
    dm = ImageNetData(root=str(tmp_path), image_size=16, resize=20, batch_size=4, num_workers=0)
    assert (dm.name, dm.num_classes, dm.input_size, dm.stem) == ("imagenet", 2, (3, 16, 16), "imagenet")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and set(y.tolist()) <= {0, 1}
    v1 = torch.cat([b for b, _ in dm.val_dataloader()])
    v2 = torch.cat([b for b, _ in dm.val_dataloader()])
    assert v1.shape == (6, 3, 16, 16) and torch.equal(v1, v2)  # center crop: deterministic
    assert dm._test is dm._val
    assert [t[1] for t in dm._val.samples] == [0, 0, 0, 1, 1, 1]


def test_imagenet_defaults_follow_bireal():
    dm = ImageNetData(root="/nonexistent/imagenet")
    assert dm.num_classes == 1000 and dm.input_size == (3, 224, 224)
    names = [type(t).__name__ for t in dm.train_transform.transforms]
    assert names == ["Resize", "RandomCrop", "RandomHorizontalFlip", "_ToTensor", "Normalize"]
    resize = dm.train_transform.transforms[0]
    assert resize.size == [256] and resize.interpolation.value == "bilinear" and resize.antialias is True
    assert dm.train_transform.transforms[1].size == (224, 224)
    assert [type(t).__name__ for t in dm.eval_transform.transforms] == ["Resize", "CenterCrop", "_ToTensor",
                                                                        "Normalize"]
    norm = dm.eval_transform.transforms[-1]
    assert (tuple(norm.mean), tuple(norm.std)) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_imagenet_errors(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError) as err:
        ImageNetData(root=str(missing)).setup()
    assert str(missing) in str(err.value) and "root/train/<class>/<image>" in str(err.value)

    no_val = tmp_path / "noval"
    _write_tree(no_val, splits=("train",))
    with pytest.raises(FileNotFoundError) as err:
        ImageNetData(root=str(no_val), image_size=16, resize=20).setup()
    assert str(no_val / "val") in str(err.value) and "\n" not in str(err.value)

    empty = tmp_path / "empty"
    for split in ("train", "val"):
        for c in ("a", "b"):
            (empty / split / c).mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as err:
        ImageNetData(root=str(empty), image_size=16, resize=20).setup()
    assert str(empty / "train") in str(err.value) and "without images" in str(err.value)
    assert "\n" not in str(err.value)

    with pytest.raises(ValueError, match=r"data\.resize=8 is invalid: must be >= data\.image_size=16"):
        ImageNetData(image_size=16, resize=8)


def test_folder_tree_with_test_split(tmp_path):
    _write_tree(tmp_path, splits=("train", "val", "test"), classes=("a", "b", "c"), n=2)
    dm = FolderData(root=str(tmp_path), batch_size=5, num_workers=0, image_size=24)
    assert (dm.name, dm.num_classes, dm.input_size, dm.resize) == ("folder", 3, (3, 24, 24), 24)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (5, 3, 24, 24) and y.max() < 3
    assert dm._test is not dm._val and len(dm._test) == 6
    t1, t2 = (torch.cat([b for b, _ in dm.test_dataloader()]) for _ in range(2))
    assert torch.equal(t1, t2)
    gray = FolderData(root=str(tmp_path), in_channels=1, image_size=16, resize=20, num_workers=0)
    assert next(iter(gray.val_dataloader()))[0].shape[1:] == (1, 16, 16)


def test_folder_errors(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError) as err:  # num_classes cannot be known: fails at construction
        FolderData(root=str(missing)).setup()
    assert str(missing) in str(err.value)
    dm = FolderData(root=str(missing), num_classes=2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dm.setup()

    no_val = tmp_path / "noval"
    _write_tree(no_val, splits=("train",))
    with pytest.raises(FileNotFoundError) as err:
        FolderData(root=str(no_val)).setup()
    assert str(no_val / "val") in str(err.value)

    empty_val = tmp_path / "emptyval"
    _write_tree(empty_val, splits=("train",))
    (empty_val / "val" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as err:
        FolderData(root=str(empty_val)).setup()
    assert str(empty_val / "val") in str(err.value) and "no images" in str(err.value)

    extra = tmp_path / "extra"
    _write_tree(extra)
    _write_tree(extra, splits=("val",), classes=("bird",), n=1)
    with pytest.raises(ValueError, match="bird"):
        FolderData(root=str(extra)).setup()


# ------------------------------------------------------------- ImageFolder decoding: torchvision.io.decode_jpeg
def _photo(h: int = 30, w: int = 40, seed: int = 0) -> np.ndarray:
    """Smooth random colours plus noise: an image whose JPEG has real DCT content, like a photo's."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    return np.clip(np.asarray(coarse, dtype=np.float64) + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


def _pil_rgb(path) -> torch.Tensor:
    """The previous loader's pixels: PIL, converted to RGB, as a uint8 (3, H, W) tensor."""
    from torchvision.datasets.folder import default_loader

    return torch.from_numpy(np.array(default_loader(str(path)))).permute(2, 0, 1)


def test_jpeg_tree_loads_through_decode_jpeg(tmp_path):
    """A JPEG tree gives float32, contiguous NCHW batches with the folders' labels, the same from a worker process."""
    from torchvision.io import decode_jpeg  # noqa: F401 (this torchvision can decode JPEGs: the path under test)

    assert _jpeg_decoder() is not None
    for split, n in (("train", 4), ("val", 3)):
        for k, c in enumerate(("ant", "bee")):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_photo(seed=10 * k + i)).save(tmp_path / split / c / f"{i}.JPEG", quality=90)
    dm = ImageNetData(root=str(tmp_path), image_size=16, resize=20, batch_size=8, num_workers=0)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and x.is_contiguous()
    assert sorted(y.tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert -2.2 < x.min() < x.max() < 2.7  # normalized: (0 - mean) / std .. (1 - mean) / std
    xv, yv = next(iter(dm.val_dataloader()))
    assert xv.shape == (6, 3, 16, 16) and yv.tolist() == [0, 0, 0, 1, 1, 1]
    worker = ImageNetData(root=str(tmp_path), image_size=16, resize=20, batch_size=8, num_workers=1)
    assert torch.equal(next(iter(worker.val_dataloader()))[0], xv)


def test_samples_match_the_pil_path(tmp_path):
    """read_image + the tensor transforms give the previous PIL path's samples under the same seed: the same crops
    and flips, the same resize filter and normalization; decoded pixels equal PIL's (both decoders are
    libjpeg-turbo with its default ISLOW IDCT), resized ones within 1 level of 255 (torch's vs PIL's rounding)."""
    from torchvision import transforms as T
    from torchvision.datasets.folder import default_loader

    dm = ImageNetData(root=str(tmp_path), image_size=16, resize=20)
    mean, std = D.IMAGENET_MEAN, D.IMAGENET_STD
    old_train = T.Compose([T.Resize(20), T.RandomCrop(16), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(mean, std)])
    old_eval = T.Compose([T.Resize(20), T.CenterCrop(16), T.ToTensor(), T.Normalize(mean, std)])
    levels = torch.tensor(std).view(3, 1, 1) * 255
    for i, (h, w) in enumerate(((30, 40), (41, 27), (64, 64))):
        path = tmp_path / f"{i}.JPEG"
        Image.fromarray(_photo(h, w, seed=i)).save(path, quality=90)
        decoded = D.read_image(str(path))
        assert decoded.shape == (3, h, w) and decoded.dtype == torch.uint8
        assert (decoded.int() - _pil_rgb(path).int()).abs().max() <= 1  # 0 here; 1 allowed for other libjpeg builds
        for new, old in ((dm.train_transform, old_train), (dm.eval_transform, old_eval)):
            for seed in range(6):  # flips and crop offsets vary with the seed
                torch.manual_seed(seed)
                a = new(D.read_image(str(path)))
                torch.manual_seed(seed)
                b = old(default_loader(str(path)))
                diff = ((a - b) * levels).abs()
                assert a.shape == b.shape == (3, 16, 16) and a.is_contiguous()
                assert diff.max() < 1.01 and diff.mean() < 0.05, (i, seed, diff.max(), diff.mean())


def test_grayscale_cmyk_jpeg_and_other_formats_load_as_rgb(tmp_path):
    """Grayscale and CMYK JPEGs decode to 3-channel RGB with PIL's pixels; PNG (RGBA, palette, 16-bit gray),
    BMP and a PNG misnamed .JPEG (as ImageNet has one) go through PIL to RGB."""
    rgb = _photo(24, 32)
    files = {"gray.jpg": ("L", "JPEG"), "cmyk.jpg": ("CMYK", "JPEG"), "rgba.png": ("RGBA", "PNG"),
             "palette.png": ("P", "PNG"), "gray16.png": ("I;16", "PNG"), "rgb.bmp": ("RGB", "BMP"),
             "png_named.JPEG": ("RGB", "PNG")}
    for name, (mode, fmt) in files.items():
        img = Image.fromarray(rgb)
        img = img.convert("L").convert("I;16") if mode == "I;16" else img.convert(mode)
        img.save(tmp_path / name, fmt)
        x = D.read_image(str(tmp_path / name))
        assert x.shape == (3, 24, 32) and x.dtype == torch.uint8, name
        assert torch.equal(x, _pil_rgb(tmp_path / name)), name
    gray = D.read_image(str(tmp_path / "gray.jpg"))
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    # a grayscale data module turns RGB into PIL's "L" exactly: round(0.299 R + 0.587 G + 0.114 B)
    levels = np.arange(0, 256, 15, dtype=np.uint8)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(1, -1, 3)
    want = torch.from_numpy(np.array(Image.fromarray(cube).convert("L")))
    assert torch.equal(_ToGray()(torch.from_numpy(cube).permute(2, 0, 1))[0], want)


def test_corrupt_jpeg_is_named_in_one_line(tmp_path):
    """decode_jpeg's RuntimeError becomes the one-line CorruptImageError naming the file, at its first read."""
    _write_tree(tmp_path, ext="JPEG")
    bad = tmp_path / "train" / "dog" / "1.JPEG"
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])  # cut short: a valid header, half the entropy-coded data
    with pytest.raises(D.CorruptImageError) as err:
        D.read_image(str(bad))
    assert str(err.value) == (f"cannot read image {bad} (RuntimeError: Image is incomplete or truncated); "
                              "replace or delete it")
    (tmp_path / "train" / "dog" / "1.JPEG").write_bytes(b"\xff\xd8\xff" + b"not a JPEG body" * 4)
    with pytest.raises(D.CorruptImageError, match=rf"^cannot read image {bad} \(RuntimeError: [^\n]+\); replace"):
        D.read_image(str(bad))
    dm = ImageNetData(root=str(tmp_path), image_size=16, resize=20, batch_size=12, num_workers=0)
    dataset = dm._folder("train", ["cat", "dog"], dm.train_transform)  # as a tree too big to check at setup
    with pytest.raises(D.CorruptImageError, match=f"cannot read image {bad} "):
        dataset[[p for p, _ in dataset.samples].index(str(bad))]
    with pytest.raises(D.CorruptImageError, match="cannot read image .*No such file"):
        D.read_image(str(tmp_path / "missing.JPEG"))


# ------------------------------------------------------------------------------------------------- the YAMLs
def _instantiate(name: str, seed: int = 7):
    cfg = OmegaConf.create({"seed": seed, "data": OmegaConf.load(CONF / f"{name}.yaml")})
    return instantiate(cfg.data)


def test_yaml_configs_instantiate(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEBIT_DATA", str(tmp_path))
    dm = _instantiate("digits")
    assert isinstance(dm, DigitsData) and dm.seed == 7 and (dm.batch_size, dm.num_workers) == (64, 0)
    for name, classes in (("cifar10", 10), ("cifar100", 100)):
        dm = _instantiate(name)
        assert isinstance(dm, CIFARData) and (dm.name, dm.num_classes, dm.batch_size, dm.num_workers) == (
            name, classes, 128, 2)
        assert dm.root == tmp_path / name and dm.download is False and dm.val_size == 5000
    dm = _instantiate("imagenet")
    assert (dm.num_classes, dm.image_size, dm.resize, dm.stem, dm.batch_size) == (1000, 224, 256, "imagenet", 128)
    _write_tree(tmp_path / "folder")
    dm = _instantiate("folder")
    assert isinstance(dm, FolderData) and dm.num_classes == 2 and dm.input_size == (3, 32, 32)


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("fraction", [0.3, 0.15, 0.123])
def test_digits_without_sklearn_equal_sklearns_data_and_split(seed, fraction):
    """onebit reads the digits and splits them without importing scikit-learn (start-up): the same images,
    labels and stratified indices as ``load_digits`` and ``train_test_split(stratify=...)``."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    from onebit.data import load_digits, stratified_split

    images, target = load_digits()
    ref = sklearn_digits()
    assert images.dtype == ref.images.dtype and np.array_equal(images, ref.images)
    assert np.array_equal(target, ref.target)
    idx = np.arange(len(target))
    ours = stratified_split(idx, fraction, target, seed)
    theirs = train_test_split(idx, test_size=fraction, stratify=target, random_state=seed)
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))
    rest = ours[1]  # the second split, of the held-out part, as DigitsData does
    ours2 = stratified_split(rest, 0.5, target[rest], seed)
    theirs2 = train_test_split(rest, test_size=0.5, stratify=target[rest], random_state=seed)
    assert all(np.array_equal(a, b) for a, b in zip(ours2, theirs2))


def test_digits_job_does_not_import_sklearn():
    import subprocess
    import sys

    code = ("import sys; from onebit.data import DigitsData; d = DigitsData(); d.setup('fit'); "
            "print(len(d.splits['train'][0]), any(m.split('.')[0] == 'sklearn' for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1257", "False"]
