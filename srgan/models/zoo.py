"""Released generators shipped inside the package, so `srgan upscale` works on a fresh clone
without training. Each is named, and its file is checked against its sha256 before it is loaded:
a damaged or replaced file is refused in one line instead of upscaling with wrong weights.

Their model card (data, parameters, the command that reproduces them, scores on Set5, Set14 and
BSD100) is `srgan/models/weights/README.md`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from srgan.core.errors import SrganError

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class Released:
    """A generator file in `WEIGHTS_DIR` and the sha256 of its bytes."""

    file: str
    sha256: str
    summary: str


RELEASED = {
    "srgan-t91bsd200": Released(
        file="srgan_t91bsd200_gan4800.pt",
        sha256="54b62acb411df64c1f69857f53b32a36fb67ea507a42d82001ff0d833220d9ec",
        summary="SRGAN ×4, 16 blocks, T91 + BSD200, 6,600 SRResNet + 4,800 SRGAN updates on 2 CPU cores",
    ),
}
DEFAULT_RELEASED = "srgan-t91bsd200"


def released_path(name: str) -> Path:
    """The verified file of the released generator `name` (a key of `RELEASED`)."""
    entry = RELEASED[name]
    path = WEIGHTS_DIR / entry.file
    if not path.is_file():
        raise SrganError(f"{name}: its file {path} is missing; restore it with `git checkout -- {path}`")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry.sha256:
        raise SrganError(
            f"{path}: sha256 {digest[:12]}… is not the released {entry.sha256[:12]}…; the file is damaged or "
            f"was replaced; restore it with `git checkout -- {path}` or pass another model with --model"
        )
    return path
