"""ImageNet-folder loading throughput per CPU core: PIL vs ``torchvision.io.decode_jpeg`` (issue 13).

    python analysis/bench_data.py                # 5 interleaved repeats over 64 images
    python analysis/bench_data.py --repeats 9 --images 128

Writes ``n_images`` synthetic ImageNet-like JPEGs (500x375 landscape, every fourth 375x500 portrait; smooth
random content plus mild noise, quality 90, seeded) to a temporary folder and measures images/s on ONE thread
(``torch.set_num_threads(1)``, this process: what one DataLoader worker, i.e. one CPU core, delivers) of the whole
sample path of :class:`onebit.data.ImageNetData`, file read + decode + transform:

- ``pil``: the previous path, ``torchvision.datasets.folder.default_loader`` (PIL, RGB) and PIL transforms
  ``Resize(256) -> RandomCrop(224) -> RandomHorizontalFlip -> ToTensor -> Normalize`` (val: ``CenterCrop``);
- ``decode_jpeg``: the path in use, :func:`onebit.data.read_image` (``torchvision.io.decode_jpeg``, uint8
  tensor) and ``ImageNetData().train_transform`` / ``eval_transform`` (uint8 antialiased bilinear resize).

The two sides run round-robin (each repeat times one pass of each over all images, so machine noise hits both
alike) after one warm-up pass; figures are medians. Both sides are seeded alike before each pass, so they crop
and flip the same way. Also reported: decode alone, the pixel differences between the two paths (uint8 levels)
and what PIL is built with (libjpeg-turbo; Pillow-SIMD is not installed here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from timing import interleaved  # analysis/ is on sys.path when run as a script


def write_jpegs(folder: Path, n_images: int, seed: int = 0, quality: int = 90) -> list[str]:
    """``n_images`` JPEG files in ``folder``: a 16x12 random colour field upsampled bicubically to 500x375 (every
    fourth image 375x500) plus Gaussian noise of std 6 levels, roughly the detail and size of an ImageNet photo."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n_images):
        w, h = (375, 500) if i % 4 == 3 else (500, 375)
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        pixels = np.asarray(coarse, dtype=np.float64) + rng.normal(0.0, 6.0, (h, w, 3))
        path = folder / f"{i:04d}.JPEG"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=quality)
        paths.append(str(path))
    return paths


def _pil_transforms(resize: int = 256, size: int = 224):
    """The transforms :class:`onebit.data.ImageNetData` applied to PIL images before decode_jpeg was used."""
    from torchvision import transforms as T

    from onebit.data import IMAGENET_MEAN, IMAGENET_STD

    train = T.Compose([T.Resize(resize), T.RandomCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                       T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    val = T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return train, val


def bench_decode(repeats: int = 3, n_images: int = 64) -> dict:
    """Images/s of one thread, PIL vs decode_jpeg, for decode alone and the train and val sample paths."""
    import numpy as np
    import PIL
    import torch
    from PIL import features
    from torchvision import datasets

    from onebit.data import images as D

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="onebit-bench-data-") as tmp:
            paths = write_jpegs(Path(tmp), n_images)
            pil_train, pil_val = _pil_transforms()
            dm = D.ImageNetData(root=tmp)  # transforms only: nothing is read from root
            new_train, new_val = dm.train_transform, dm.eval_transform
            pil_load = datasets.folder.default_loader

            def run(load, transform=None, seed=0):
                def one_pass():
                    torch.manual_seed(seed)
                    for p in paths:
                        x = load(p)
                        if transform is not None:
                            transform(x)
                return one_pass

            parts = {
                "decode_only": {"pil": run(pil_load), "decode_jpeg": run(D.read_image)},
                "train": {"pil": run(pil_load, pil_train), "decode_jpeg": run(D.read_image, new_train)},
                "val": {"pil": run(pil_load, pil_val), "decode_jpeg": run(D.read_image, new_val)},
            }
            out = {"images": n_images, "threads": 1, "repeats": repeats,
                   "jpeg": "500x375 (1 in 4 375x500), quality 90, synthetic"}
            for name, fns in parts.items():
                sec = interleaved(fns, repeats, warmup=1)
                pil, new = n_images / sec["pil"], n_images / sec["decode_jpeg"]
                out[name] = {"pil_images_per_s": pil, "decode_jpeg_images_per_s": new, "speedup": new / pil}

            # pixel differences, in uint8 levels: decoded images, and the normalized 224x224 samples (x std x 255)
            std = torch.tensor(D.IMAGENET_STD).view(3, 1, 1) * 255
            dec, smp = [], {"train": [], "val": []}
            for i, p in enumerate(paths):
                a = D.read_image(p).to(torch.int16)
                b = torch.from_numpy(np.asarray(pil_load(p))).permute(2, 0, 1).to(torch.int16)
                dec.append((a - b).abs().float())
                for split, new_t, pil_t in (("train", new_train, pil_train), ("val", new_val, pil_val)):
                    torch.manual_seed(i)
                    x = new_t(D.read_image(p))
                    torch.manual_seed(i)
                    smp[split].append(((x - pil_t(pil_load(p))) * std).abs())
            diff = {"decode_max": max(d.max().item() for d in dec),
                    "decode_mean": statistics.fmean(d.mean().item() for d in dec)}
            for split, ds in smp.items():
                diff[f"{split}_sample_max"] = max(d.max().item() for d in ds)
                diff[f"{split}_sample_mean"] = statistics.fmean(d.mean().item() for d in ds)
                diff[f"{split}_sample_fraction_differing"] = statistics.fmean((d > 0.5).float().mean().item()
                                                                             for d in ds)
            out["abs_diff_levels"] = diff
    finally:
        torch.set_num_threads(threads)
    turbo = features.check_feature("libjpeg_turbo")
    out["pil"] = {"version": PIL.__version__, "libjpeg": features.version("jpg"),
                  "libjpeg_turbo": features.version_feature("libjpeg_turbo") if turbo else None,
                  "pillow_simd": ".post" in PIL.__version__}  # Pillow-SIMD versions read X.Y.Z.postN
    out["decoder_used"] = "torchvision.io.decode_jpeg" if D._jpeg_decoder() is not None else "PIL"
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--images", type=int, default=64)
    args = p.parse_args(argv)
    r = bench_decode(args.repeats, args.images)
    print(json.dumps(r, indent=1))
    for name in ("decode_only", "train", "val"):
        x = r[name]
        print(f"{name:12s} PIL {x['pil_images_per_s']:6.0f} img/s   decode_jpeg {x['decode_jpeg_images_per_s']:6.0f} "
              f"img/s   x{x['speedup']:.2f}   (one thread)")
    d = r["abs_diff_levels"]
    print(f"decoded pixels differ by max {d['decode_max']:.0f}, mean {d['decode_mean']:.4f} levels; train samples "
          f"by max {d['train_sample_max']:.2f}, mean {d['train_sample_mean']:.4f} levels "
          f"({100 * d['train_sample_fraction_differing']:.2f}% of values)")
    print(f"PIL {r['pil']['version']} with libjpeg-turbo {r['pil']['libjpeg_turbo']}, "
          f"Pillow-SIMD: {r['pil']['pillow_simd']}; ImageNetData decodes JPEGs with {r['decoder_used']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
