"""Writing rendered frames: a folder of numbered PNGs (videos come with ``avatar animate``)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from avatarcli.fileio import atomic_folder, atomic_path


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, H, W, 3) floats in [0, 1] -> uint8 numpy."""
    return (images.detach().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def write_png_folder(images: np.ndarray, folder: str | Path, stem: str = "frame") -> list[Path]:
    """Write (N, H, W, 3) uint8 images as ``stem_0000.png`` ... into ``folder`` (atomically)."""
    digits = max(4, len(str(len(images) - 1)))
    with atomic_folder(folder) as tmp:
        for i, img in enumerate(images):
            iio.imwrite(tmp / f"{stem}_{i:0{digits}d}.png", img)
    return sorted(Path(folder).glob(f"{stem}_*.png"))


def write_png(image: np.ndarray, path: str | Path) -> None:
    """Write one (H, W, 3) uint8 image atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        iio.imwrite(tmp, image, extension=".png")


def grid(images: np.ndarray) -> np.ndarray:
    """Images (N, H, W, 3) side by side."""
    return np.concatenate(list(images), axis=1)
