"""The generator as a service a server runs, one request at a time: `ImageService` (encoded images
in, PNG bytes out, through `srgan upscale`'s own path) and `TensorService` (float tensors in and
out, for programs). `srgan.tracking.serving` packages them as MLflow models (it names them:
`SERVICES`), which `mlflow models serve` answers HTTP with; nothing here knows MLflow or HTTP.

A request the service will not answer raises `Refused` with the HTTP status it deserves and one
line naming what is wrong. One image at a time per process (a lock): the CPU's cores or the GPU
already serve one, and images computed side by side would multiply the memory. While it computes,
the process holds its part of the cores (`srgan.core.threads`), and gives it back when idle.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from srgan.core import threads
from srgan.core.errors import Refused, SrganError
from srgan.core.runtime import Runtime, auto_precision, resolve_device
from srgan.data.imageio import ImageReadError
from srgan.inference.limits import DEFAULT_MAX_OUTPUT_PIXELS, MIN_TILE, check_max_output_pixels
from srgan.inference.tiling import OutOfMemory, Tile, TimedOut, default_tile
from srgan.inference.upscale import upscale_encoded
from srgan.models.checkpoint import load_generator

_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")


class _Service:
    """The generator file loaded once, the settings checked, the runtime (`auto`), a lock.

    `settings`: `max_output_pixels` (as `srgan upscale --max-output-pixels`) and `tile` ("auto"
    or LR pixels), over `DEFAULTS`; `timeout`: the seconds a request may take, waiting included
    (the server answers "timed out" then)."""

    DEFAULTS: dict[str, Any] = {"max_output_pixels": DEFAULT_MAX_OUTPUT_PIXELS, "tile": "auto"}

    def __init__(self, checkpoint: Path, settings: dict[str, Any], timeout: float) -> None:
        self.generator = load_generator(checkpoint)
        settings = {**self.DEFAULTS, **settings}  # MLflow passes only keys logged with the model
        self.max_output_pixels, tile = settings["max_output_pixels"], settings["tile"]
        if not isinstance(self.max_output_pixels, int) or self.max_output_pixels < 1:
            raise SrganError(f"model_config: max_output_pixels {self.max_output_pixels!r}; use a pixel count")
        check_max_output_pixels(self.max_output_pixels)
        if tile != "auto" and (not isinstance(tile, int) or tile < MIN_TILE):
            raise SrganError(f"model_config: tile {tile!r}; use auto or a side of at least {MIN_TILE} pixels")
        # `runtime.*: auto`, without a share of the cores yet: `turn` claims it per image.
        device, _ = resolve_device("auto")
        self.rt = Runtime(device=device, precision=auto_precision(device))
        self.generator = self.generator.to(device)  # once; `upscale_batch` keeps it there
        self.tile = Tile(default_tile(self.generator, self.rt) if tile == "auto" else tile)
        self.timeout = timeout
        self.lock = threading.Lock()

    @contextmanager
    def turn(self, deadline: float) -> Iterator[Runtime]:
        """Hold the model for one image, waiting for the ones before it until `deadline`; on the
        CPU, with this process's part of the cores claimed meanwhile, so that an idle server
        process leaves them to a busy one and to other srgan jobs."""
        if not self.lock.acquire(timeout=max(deadline - time.monotonic(), 0)):
            raise Refused("the server is busy with earlier requests past its time limit", 504)
        try:
            if self.rt.device.type != "cpu":
                yield self.rt
            else:
                with threads.computing() as share:
                    yield dataclasses.replace(self.rt, share=share)
        finally:
            self.lock.release()


class ImageService(_Service):
    """Encoded images (PNG, JPEG, WebP, … bytes) → the PNG bytes `srgan upscale` writes for each:
    upright by EXIF, gray kept gray, alpha kept, tiles at `tile`, `auto` precision, clamped and
    rounded (`srgan.inference.upscale.upscale_encoded`). Memory is bounded by the tile, not the
    image; the output is capped at `max_output_pixels`, read from the header before any pixel is
    decoded. An image still computing at the deadline stops at its next tile."""

    SETTING = "the server's max_output_pixels (model_config)"

    def upscale(self, images: list[bytes]) -> list[bytes]:
        deadline = time.monotonic() + self.timeout
        answers = []
        for row, data in enumerate(images):
            name = f"image {row}" if len(images) > 1 else "image"
            if not isinstance(data, (bytes, bytearray)):
                raise Refused(f"{name}: a {type(data).__name__}, not the bytes of an image")
            with self.turn(deadline) as rt:
                answers.append(self._one(bytes(data), name, rt, deadline))
        return answers

    def _one(self, data: bytes, name: str, rt: Runtime, deadline: float) -> bytes:
        """One image, its failures refused in a line naming it. Bytes that are no image but are
        base64 text are decoded once: MLflow decodes the base64 of a binary column sent as
        `dataframe_split` or `dataframe_records`, and passes `inputs` and `instances` on as text."""
        try:
            return self._encoded(data, name, rt, deadline)
        except ImageReadError as err:
            if err.reason != "not an image" or not _BASE64_TEXT.fullmatch(data):
                raise Refused(str(err)) from None
        try:
            decoded = base64.b64decode(b"".join(data.split()), validate=True)
        except binascii.Error as err:
            raise Refused(f"{name}: neither an image nor base64 ({err})") from None
        try:
            return self._encoded(decoded, name, rt, deadline)
        except ImageReadError as err:
            raise Refused(str(err)) from None

    def _encoded(self, data: bytes, name: str, rt: Runtime, deadline: float) -> bytes:
        try:
            return upscale_encoded(
                self.generator,
                data,
                name,
                rt,
                tile=self.tile,
                max_output_pixels=self.max_output_pixels,
                setting=self.SETTING,
                deadline=deadline,
            )
        except TimedOut as err:
            raise Refused(f"{name}: {err}", 504) from None
        except OutOfMemory as err:
            raise Refused(f"{name}: {err}", 503) from None


class TensorService(_Service):
    """float32 (n, 3, h, w) RGB in [0, 1] → float32 (n, 3, h·s, w·s), unclamped: one whole-image
    fp32 forward, so memory grows with the image (for small inputs). NaN, ±inf and values
    outside [0, 1] are refused: the generator would answer them with NaN (invalid JSON) or with
    an image of the wrong brightness."""

    def upscale(self, batch: np.ndarray) -> np.ndarray:
        if batch.size and not np.isfinite(batch).all():
            raise Refused("inputs: NaN or infinite values; send RGB values in [0, 1]")
        if batch.size and (batch.min() < 0 or batch.max() > 1):
            raise Refused(
                f"inputs: values from {batch.min():g} to {batch.max():g}; send RGB values in [0, 1] "
                "(8-bit pixels divided by 255)"
            )
        with self.turn(time.monotonic() + self.timeout) as rt, torch.inference_mode():
            return self.generator(torch.from_numpy(batch).to(rt.device)).cpu().numpy()  # float32 (n, 3, h·s, w·s)
