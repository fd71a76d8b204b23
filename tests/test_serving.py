"""`mlflow models serve` of the models a training stage logs (`srgan.tracking.serving`), over real
HTTP: the registered image model (encoded images in, PNG out) and the tensor model.

One tiny random-weight generator is logged and registered as the train stage does it, and three
real servers run for the module: the image model as the docs serve it, the same with a 2-s
request timeout and a lower cap (`SERVING_MODEL_CONFIG`), and the tensor model.
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from PIL import Image
from project import BIN, REPO, clean_env, free_port, photo, stop_process_group, wait_for_url
from tiny_stage import random_generator

from srgan.cli import main
from srgan.models.checkpoint import generator_config, save_generator
from srgan.tracking.runs import stage_run

# One worker for the module, so its three servers start once (`--dist loadgroup`).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("serving")]

SCALE = 4


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def peak_rss(self) -> int:
        """The largest peak resident memory (VmHWM, bytes) of the server's processes."""
        peaks = []
        for proc in [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peaks.append(int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024)
        return max(peaks)


@dataclass(frozen=True)
class Served:
    root: Path
    env: dict[str, str]  # the store's MLFLOW_TRACKING_URI
    version_uri: str  # models:/srgan-generator/<version>: the image model
    run_id: str  # the run that logged it
    images: Server
    quick: Server  # the image model, timing out after 2 s, capped at 99 MP
    tensors: Server  # runs:/<run id>/generator


def serve(model_uri: str, root: Path, env: dict[str, str], *extra: str) -> Server:
    port = free_port()
    log = root / f"serve-{port}.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local"]
            + ["-h", "127.0.0.1", "-p", str(port), "-w", "1", *extra],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return Server(f"http://127.0.0.1:{port}", process, log)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("serving")
    env = clean_env({"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"})
    gen = random_generator(bicubic_skip=True)
    save_generator(root / "srgan.pt", gen, generator_config(SCALE, 2, 8, True))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # the project root: mlruns/ goes here
        patch.delenv("DVC_ROOT", raising=False)
        patch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
        with stage_run("train", {"model.blocks": 2}) as tracker:
            version = tracker.register_generator(tracker.log_generator(root / "srgan.pt"))
            run_id = tracker.run_id
    version_uri = f"models:/srgan-generator/{version}"
    servers = [
        serve(version_uri, root, env),
        serve(version_uri, root, {**env, "SERVING_MODEL_CONFIG": '{"max_output_pixels": 99000000}'}, "-t", "2"),
        serve(f"runs:/{run_id}/generator", root, env),
    ]
    try:
        for server in servers:
            wait_for_url(f"{server.url}/ping", server.process, server.log, timeout=180)
        yield Served(root, env, version_uri, run_id, *servers)
    finally:
        for server in servers:
            stop_process_group(server.process)
    for server in servers:
        assert "Traceback" not in server.log.read_text(), server.log.read_text()[-3000:]


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def frame(*images: bytes) -> bytes:
    """A request body: the images as MLflow's `dataframe_split` of a binary column, base64."""
    rows = [[base64.b64encode(data).decode()] for data in images]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()


def post(server: Server, body: bytes, timeout: float = 120) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    return requests.post(f"{server.url}/invocations", data=body, headers=headers, timeout=timeout)


def pngs(answer: requests.Response) -> list[np.ndarray]:
    """The answer's images, decoded from the PNG bytes (base64) MLflow sends."""
    assert answer.status_code == 200, answer.text[:500]
    rows = answer.json()["predictions"]
    images = []
    for row in rows:
        data = base64.b64decode(row["image"])
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        images.append(np.asarray(Image.open(io.BytesIO(data))))
    return images


def upscaled(served: Served, path: Path, tmp_path: Path) -> np.ndarray:
    """What `srgan upscale` writes for `path` with the registered version."""
    out = tmp_path / f"{path.stem}_x4.png"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", served.env["MLFLOW_TRACKING_URI"])
        main(["upscale", str(path), "-o", str(out), "--model", served.version_uri])
    return np.asarray(Image.open(out))


def docs_curl_line() -> str:
    """The docs' request: docs/using-a-model.md's code block that sends photo.jpg."""
    text = (REPO / "docs" / "using-a-model.md").read_text()
    return next(b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "base64 -w0 photo.jpg" in b)


def test_the_docs_curl_line_answers_a_jpeg_with_the_png_srgan_upscale_writes(served: Served, tmp_path: Path) -> None:
    """A JPEG whose EXIF tag says "rotate 90°": served as the docs send it, the answer is the
    PNG `srgan upscale` writes for the same file with the same registered version."""
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    photo(np.random.default_rng(1), 45, 70).save(tmp_path / "photo.jpg", quality=90, exif=exif)
    line = docs_curl_line().replace("127.0.0.1:5001", served.images.url.removeprefix("http://"))
    subprocess.run(["bash", "-c", line], cwd=tmp_path, env=served.env, check=True, timeout=120)
    with Image.open(tmp_path / "photo_x4.png") as answer:
        assert answer.format == "PNG" and answer.size == (45 * SCALE, 70 * SCALE)  # upright: 45 wide
        got = np.asarray(answer).astype(int)
    expected = upscaled(served, tmp_path / "photo.jpg", tmp_path)
    assert np.abs(got - expected).max() <= 1


@pytest.mark.parametrize(
    ("mode", "shape"),
    [("L", (13, 7)), ("RGBA", (9, 16, 4)), ("RGB", (1, 1, 3))],
)
def test_gray_alpha_and_odd_sizes_come_back_as_srgan_upscale_writes_them(
    served: Served, tmp_path: Path, mode: str, shape: tuple[int, ...]
) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode).save(tmp_path / "in.png")
    (got,) = pngs(post(served.images, frame((tmp_path / "in.png").read_bytes())))
    expected = upscaled(served, tmp_path / "in.png", tmp_path)
    assert got.shape == expected.shape == (shape[0] * SCALE, shape[1] * SCALE, *shape[2:])
    assert np.abs(got.astype(int) - expected).max() <= 1


def test_images_sent_as_inputs_or_instances_and_several_in_one_request(served: Served) -> None:
    """MLflow decodes the base64 of `dataframe_split` and `dataframe_records` itself and passes
    `inputs` and `instances` on as text: every form gets the same picture, one answer per row."""
    rng = np.random.default_rng(3)
    small, wide = (encoded(photo(rng, h, w), "WEBP", quality=90) for h, w in ((8, 12), (5, 30)))
    text = base64.b64encode(small).decode()
    forms = [
        {"dataframe_records": [{"image": text}]},
        {"inputs": {"image": [text]}},
        {"instances": [{"image": text}]},
    ]
    reference, other = pngs(post(served.images, frame(small, wide)))
    assert reference.shape == (32, 48, 3) and other.shape == (20, 120, 3)
    for form in forms:
        (got,) = pngs(post(served.images, json.dumps(form).encode()))
        assert np.array_equal(got, reference), form


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says `width`×`height` and which holds a few bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


JPEG = encoded(photo(np.random.default_rng(4), 16, 16), "JPEG")
BAD = {
    "empty": (frame(b""), "image: empty"),
    "not an image": (frame(b"%PDF-1.7\n" + b"text " * 40), "image: not an image"),
    "truncated": (frame(JPEG[: len(JPEG) // 2]), "image: truncated"),
    "corrupt": (frame(JPEG[:200] + bytes(range(256)) * 2 + JPEG[712:]), "image: corrupt"),
    "bad base64 as inputs": (json.dumps({"inputs": {"image": ["abc"]}}).encode(), "neither an image nor base64"),
    "bad base64": (json.dumps({"dataframe_split": {"columns": ["image"], "data": [["abc"]]}}).encode(), "padding"),
    "over the cap": (
        frame(png_header_only(4000, 2000)),
        "image: too many pixels (4000×2000 > 6250000 input pixels, i.e. 100000000 output pixels at ×4; "
        "the server's max_output_pixels (model_config))",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_image_is_a_one_line_400_and_the_server_answers_the_next(served: Served, case: str) -> None:
    body, message = BAD[case]
    began = time.monotonic()
    answer = post(served.images, body)
    assert answer.status_code == 400, answer.text[:500]
    error = answer.json()
    assert "\n" not in error["message"] and message in error["message"]
    assert "stack_trace" not in error
    assert time.monotonic() - began < 10  # the cap is read from the header: nothing is decoded
    (good,) = pngs(post(served.images, frame(JPEG)))
    assert good.shape == (64, 64, 3)


def test_the_cap_set_when_serving_is_the_one_applied(served: Served) -> None:
    """A header of 2500×2500 (100 MP out): within the default cap, so decoded (and found
    truncated); over the 99 MP the second server was started with."""
    body = frame(png_header_only(2500, 2500))
    assert post(served.images, body).json()["message"] == "image: truncated"
    message = post(served.quick, body).json()["message"]
    assert message.startswith("image: too many pixels (2500×2500 > 6187500 input pixels, i.e. 99000000 output")


def test_a_bad_setting_stops_the_server_with_one_line_naming_it(served: Served) -> None:
    env = {**served.env, "SERVING_MODEL_CONFIG": '{"tile": 8}'}
    server = serve(served.version_uri, served.root, env)
    assert server.process.wait(timeout=120) != 0
    log = server.log.read_text()
    assert "error: model_config: tile 8; use auto or a side of at least 32 pixels\n" in log
    assert "SrganError" not in log  # the line, not a traceback of ours (MLflow's own command follows)


def test_requests_mlflow_refuses_before_the_model_are_4xx(served: Served) -> None:
    """An empty body, a raw JPEG, a wrong column and a form body: MLflow's own answers, all 4xx.
    (A request without any Content-Type is MLflow's 500, left out: `content_type.split` of None.)"""
    url = f"{served.images.url}/invocations"
    answers = [
        requests.post(url, data=b"", headers={"Content-Type": "application/json"}, timeout=30),
        requests.post(url, data=JPEG, headers={"Content-Type": "application/json"}, timeout=30),
        requests.post(
            url,
            data=json.dumps({"dataframe_split": {"columns": ["img"], "data": [["x"]]}}),
            headers={"Content-Type": "application/json"},
            timeout=30,
        ),
        requests.post(url, data={"image": "x"}, timeout=30),  # what `curl -d` sends without a Content-Type
    ]
    assert [a.status_code // 100 for a in answers] == [4, 4, 4, 4], [a.text[:200] for a in answers]


def test_four_clients_at_once_get_every_answer_and_memory_stays_bounded_by_the_tile(served: Served) -> None:
    """Four clients send for 5 s: every answer is a 200 with the right image. Then one
    1500×1000 photo (24 MP out): the server's peak memory grows by less than 20 bytes an output
    pixel, where whole-image inference alone would hold 37·8 floats (1184 bytes) an input pixel."""
    body = frame(encoded(photo(np.random.default_rng(5), 64, 96), "JPEG", quality=90))
    statuses: list[int] = []
    shapes: set[tuple[int, ...]] = set()

    def client() -> None:
        end = time.monotonic() + 5
        while time.monotonic() < end:
            answer = post(served.images, body)
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                shapes.update(image.shape for image in pngs(answer))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    assert len(statuses) >= 8 and set(statuses) == {200} and shapes == {(256, 384, 3)}

    before = served.images.peak_rss()
    big = encoded(photo(np.random.default_rng(6), 1000, 1500), "JPEG", quality=90)
    (image,) = pngs(post(served.images, frame(big), timeout=300))
    assert image.shape == (4000, 6000, 3)
    growth = served.images.peak_rss() - before
    assert growth < 20 * 4000 * 6000, f"{growth / 2**20:.0f} MiB"


def test_a_timed_out_request_stops_computing_so_the_next_is_answered(served: Served) -> None:
    """The server answers 504 at its timeout (2 s here) while the image is still in its tiles;
    the model stops at the next tile, so a small request right after is answered at once
    instead of waiting out the rest of the big one (about 10 s here)."""
    big = encoded(photo(np.random.default_rng(7), 2000, 3000), "JPEG", quality=90)
    answer = post(served.quick, frame(big))
    assert answer.status_code == 504
    began = time.monotonic()
    (small,) = pngs(post(served.quick, frame(JPEG)))
    assert small.shape == (64, 64, 3) and time.monotonic() - began < 2


def tensor_request(values: str) -> bytes:
    return ('{"inputs": ' + values + "}").encode()


def test_the_tensor_model_answers_floats_and_refuses_nan_inf_and_8_bit_values(served: Served, tmp_path: Path) -> None:
    rgb = np.random.default_rng(8).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    lr_img = rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255  # (1, 3, 12, 16) in [0, 1]
    answer = post(served.tensors, tensor_request(json.dumps(lr_img.tolist())))
    assert answer.status_code == 200, answer.text[:500]
    predictions = np.asarray(answer.json()["predictions"], dtype=np.float32)
    assert predictions.shape == (1, 3, 48, 64)
    served_pixels = np.round(np.clip(predictions[0], 0, 1) * 255).astype(int).transpose(1, 2, 0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", served.env["MLFLOW_TRACKING_URI"])
        main(
            ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png")]
            + ["--model", served.version_uri, "--precision", "fp32"]
        )
    assert np.abs(served_pixels - np.asarray(Image.open(tmp_path / "out.png"))).max() <= 1

    for values, message in [
        ("[[[[0.5, NaN]], [[0.5, 0.5]], [[0.5, 0.5]]]]", "inputs: NaN or infinite values"),
        ("[[[[0.5, Infinity]], [[0.5, 0.5]], [[0.5, 0.5]]]]", "inputs: NaN or infinite values"),
        ("[[[[0, 255]], [[0, 12]], [[7, 0]]]]", "inputs: values from 0 to 255; send RGB values in [0, 1]"),
    ]:
        refused = post(served.tensors, tensor_request(values))
        assert refused.status_code == 400 and message in refused.json()["message"], refused.text[:300]
        assert "\n" not in refused.json()["message"]
    assert post(served.tensors, tensor_request(json.dumps(lr_img.tolist()))).status_code == 200


def test_the_version_is_the_image_model_and_its_run_also_holds_the_tensor_model(served: Served) -> None:
    """What a user finds in the store: the registered version's signature says images in, PNG out,
    and its request example is a body of the form the docs send; the run's `generator` is the
    tensor model."""
    script = (
        "import json, mlflow\n"
        "from mlflow.models import get_model_info\n"
        f"image, tensor = get_model_info('{served.version_uri}'), get_model_info('runs:/{served.run_id}/generator')\n"
        f"example = mlflow.artifacts.download_artifacts('runs:/{served.run_id}/upscaler/serving_input_example.json')\n"
        "print(json.dumps([image.signature.to_dict(), tensor.signature.to_dict(), json.load(open(example))]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=served.env, capture_output=True, text=True, check=True, cwd=served.root
    ).stdout
    image, tensor, example = json.loads(out.strip().splitlines()[-1])
    binary = [{"type": "binary", "name": "image", "required": True}]
    assert json.loads(image["inputs"]) == json.loads(image["outputs"]) == binary
    floats = [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 3, -1, -1]}}]
    assert json.loads(tensor["inputs"]) == json.loads(tensor["outputs"]) == floats
    (row,) = example["dataframe_split"]["data"]
    assert example["dataframe_split"]["columns"] == ["image"]
    assert base64.b64decode(row[0]).startswith(b"\x89PNG")
