"""Training batches from the preprocessed uint8 shards, read through memory maps.

Batch `i` is a pure function of (seed, i): its patch indices, crop corners and flips come from a
generator seeded with both. A resumed run therefore sees exactly the batches it would have seen,
and DataLoader workers need no shared random state.
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from srgan.core.errors import SrganError


class Shards:
    """The (LR, HR) patch pairs of one split, memory-mapped: nothing is decoded or resized.

    HR patches are (N, H, H, 3) uint8 RGB; LR patches (N, H/scale, H/scale, 3).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.hr_files = sorted(self.folder.glob("hr_*.npy"))
        if not self.hr_files:
            raise SrganError(f"{self.folder}: no hr_*.npy shards; run the preprocess stage (dvc repro preprocess)")
        self._maps: list[tuple[np.ndarray, np.ndarray]] | None = None
        # Global index of each shard's first pair, and the total at the end (read from headers).
        self.offsets = np.concatenate([[0], np.cumsum([hr.shape[0] for _, hr in self._open()])])

    def _open(self) -> list[tuple[np.ndarray, np.ndarray]]:
        # Mapped again after unpickling, so each DataLoader worker maps the files itself.
        if self._maps is None:
            self._maps = [
                (np.load(f.with_name(f.name.replace("hr_", "lr_")), mmap_mode="r"), np.load(f, mmap_mode="r"))
                for f in self.hr_files
            ]
        return self._maps

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_maps": None}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The uint8 (lr (h, w, 3), hr (H, W, 3)) patch pair at global `index`."""
        offsets = self.offsets
        shard = int(np.searchsorted(offsets, index, side="right") - 1)
        lr_map, hr_map = self._open()[shard]
        return lr_map[index - offsets[shard]], hr_map[index - offsets[shard]]

    def all_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every pair as uint8 tensors (N, 3, h, w) and (N, 3, H, W): for the small validation split."""
        lr = np.concatenate([np.asarray(lr_map) for lr_map, _ in self._open()])
        hr = np.concatenate([np.asarray(hr_map) for _, hr_map in self._open()])
        return torch.from_numpy(lr).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(hr).permute(
            0, 3, 1, 2
        ).contiguous()


class RandomCrops(Dataset):
    """Item `i` is the whole batch for step `i`: aligned random crops with one of the 8 flips/rotations.

    Returns uint8 tensors lr (B, 3, c/scale, c/scale) and hr (B, 3, c, c), RGB; the training step
    converts them to float in [0, 1] on its device (uint8 moves 4× fewer bytes).

    `part` = (rank, world_size) keeps only that process's consecutive slice of B / world_size
    patches of each global batch, so N processes together see exactly the one-process batches.
    """

    def __init__(
        self, shards: Shards, *, batch_size: int, crop_size: int, scale: int, seed: int, part: tuple[int, int] = (0, 1)
    ) -> None:
        self.shards = shards
        self.batch_size = batch_size
        rank, world_size = part
        share = batch_size // world_size
        self.slice = slice(rank * share, (rank + 1) * share)
        self.lr_crop = crop_size // scale
        self.scale = scale
        self.seed = seed
        self.count = len(shards)
        _, hr = shards.pair(0)
        self.lr_side = hr.shape[0] // scale

    def __len__(self) -> int:  # pragma: no cover - indexed by step, not iterated
        return 2**62

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step])
        indices = rng.integers(0, self.count, self.batch_size)
        corners = rng.integers(0, self.lr_side - self.lr_crop + 1, (self.batch_size, 2))
        transforms = rng.integers(0, 8, self.batch_size)
        lr_batch, hr_batch = [], []
        for index, (y, x), t in zip(indices[self.slice], corners[self.slice], transforms[self.slice]):
            lr, hr = self.shards.pair(int(index))
            s, c = self.scale, self.lr_crop
            lr_crop = lr[y : y + c, x : x + c]
            hr_crop = hr[y * s : (y + c) * s, x * s : (x + c) * s]
            lr_batch.append(_dihedral(lr_crop, int(t)))
            hr_batch.append(_dihedral(hr_crop, int(t)))
        lr_t = torch.from_numpy(np.stack(lr_batch)).permute(0, 3, 1, 2).contiguous()
        hr_t = torch.from_numpy(np.stack(hr_batch)).permute(0, 3, 1, 2).contiguous()
        return lr_t, hr_t


def _dihedral(patch: np.ndarray, transform: int) -> np.ndarray:
    """One of the 8 flips/rotations of an (H, W, 3) patch; same `transform` keeps LR/HR aligned."""
    if transform & 1:
        patch = patch[:, ::-1]
    if transform & 2:
        patch = patch[::-1]
    if transform & 4:
        patch = patch.transpose(1, 0, 2)
    return np.ascontiguousarray(patch)


def batch_loader(dataset: RandomCrops, *, start: int, stop: int, workers: int, pin_memory: bool) -> DataLoader:
    """Batches for steps `start` .. `stop`-1, prepared by `workers` processes ahead of the step."""
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=range(start, stop),
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
        worker_init_fn=_ignore_ctrl_c,
    )


def _ignore_ctrl_c(worker_id: int) -> None:
    """A terminal's Ctrl-C reaches the whole process group, workers included. The main process
    turns it into a clean stop at the next log step and needs batches until then, so a worker
    must not die of it (it exits when the main process closes the loader, or dies)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def to_float(img: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N, 3, H, W) → float32 in [0, 1] on `device`, channels_last for faster convolutions."""
    return img.to(device, non_blocking=True).float().div_(255).contiguous(memory_format=torch.channels_last)
