"""Serving against `srgan upscale`: images/s and peak RSS of `mlflow models serve` of the image
model and of `srgan upscale` on the same images, in one run; then clients at once, and a big photo.

The model is the released srgan-t91bsd200 (16 blocks × 64 channels, ×4), logged and registered
in a temporary store as the train stage does it (`srgan.tracking.serving.log_served_models`). The
server runs with one worker (`-w 1`, or `--workers`); its peak RSS is the largest VmHWM of its
processes (the worker's; each worker holds its own model). `srgan upscale`
runs as one command on a folder of the same images, start-up included; its peak RSS is the
child's `ru_maxrss`. Served PNGs are compared with its files (max difference in grey levels).

    .venv/bin/python benchmarks/serve_throughput.py [--size 512] [--count 4] [--clients 4] [--seconds 60]
        [--client-size 256] [--workers 1] [--big] [--tensor]

`--big` also serves a 3000×2000 photo (12000×8000 out) on a fresh server with a 900-s timeout and
upscales it with `srgan upscale`: the memory figures a 96-MP answer costs. `--tensor` serves the
tensor model (`runs:/<id>/generator`, whole-image) 128×128 and 256×256 inputs on a fresh server.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import mlflow
import numpy as np
import psutil
import requests
import torch
from PIL import Image
from upscale_memory import synthetic_photo

from srgan.core.runtime import cpu_name
from srgan.models.zoo import released_path
from srgan.tracking.serving import log_served_models

MODEL = "srgan-t91bsd200"
BIN = Path(sys.executable).parent


def peak_rss(pid: int) -> int:
    """The largest VmHWM (bytes) among a server's processes: its worker's, or its busiest worker's."""
    peaks = []
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        peaks.append(int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024)
    return max(peaks)


class Server:
    """`mlflow models serve` of `uri`: `workers` processes, `timeout` seconds a request."""

    def __init__(self, uri: str, env: dict[str, str], timeout: int, log: Path, workers: int = 1) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        command = [str(BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1"]
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [*command, "-p", self.url.rsplit(":", 1)[1], "-w", str(workers), "-t", str(timeout)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        began = time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited:\n{log.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        self.start_s = time.monotonic() - began

    def upscale(self, data: bytes, timeout: float = 1200) -> tuple[int, bytes]:
        body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(data).decode()]]}})
        answer = requests.post(
            f"{self.url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=timeout
        )
        if answer.status_code != 200:
            return answer.status_code, b""
        return 200, base64.b64decode(answer.json()["predictions"][0]["image"])

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


def free_port() -> int:
    """A local port no one listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def srgan_upscale(source: Path, target: Path, env: dict[str, str]) -> tuple[float, int]:
    """`srgan upscale source -o target` with the released model: wall seconds and peak RSS (bytes)."""
    began = time.monotonic()
    process = subprocess.Popen(
        [str(BIN / "srgan"), "upscale", str(source), "-o", str(target), "--model", MODEL, "--format", "png"], env=env
    )
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"srgan upscale {source} failed")
    return time.monotonic() - began, usage.ru_maxrss * 1024


def differs(png: bytes, path: Path) -> int:
    """The largest difference, in grey levels, between a served PNG and a file `srgan upscale` wrote."""
    Image.MAX_IMAGE_PIXELS = None
    served = np.asarray(Image.open(io.BytesIO(png))).astype(int)
    return int(np.abs(served - np.asarray(Image.open(path))).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="side of the photos served one after another")
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--client-size", type=int, default=256, help="side of the photos the clients send")
    parser.add_argument("--workers", type=int, default=1, help="the server's worker processes (-w)")
    parser.add_argument("--big", action="store_true", help="also a 3000×2000 photo, on a server with -t 900")
    parser.add_argument("--tensor", action="store_true", help="also the tensor model on 128² and 256² inputs")
    args = parser.parse_args()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}; mlflow {mlflow.__version__}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # The server execs `uvicorn` from PATH: the one installed beside this Python.
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
        os.chdir(tmp)
        with mlflow.start_run() as run:
            uri = log_served_models(released_path(MODEL))
        version = mlflow.register_model(uri, "srgan-generator").version
        uri = f"models:/srgan-generator/{version}"

        photos = tmp / "photos"
        photos.mkdir()
        for index in range(args.count):
            synthetic_photo(args.size, args.size, seed=index).save(photos / f"p{index}.jpg", quality=90)
        seconds, rss = srgan_upscale(photos, tmp / "upscaled", env)
        print(f"srgan upscale, {args.count} photos {args.size}×{args.size} in one command (start-up included):")
        print(f"  {seconds:.1f} s, {args.count / seconds:.3f} images/s, peak RSS {rss / 2**30:.2f} GiB")

        server = Server(uri, env, 60, tmp / "serve.log", args.workers)
        print(f"mlflow models serve {uri} -w {args.workers} (default 60-s timeout): up in {server.start_s:.1f} s")
        began, latencies, worst = time.monotonic(), [], 0
        for path in sorted(photos.iterdir()):
            sent = time.monotonic()
            status, png = server.upscale(path.read_bytes())
            latencies.append(time.monotonic() - sent)
            assert status == 200, status
            worst = max(worst, differs(png, tmp / "upscaled" / f"{path.stem}.png"))
        seconds = time.monotonic() - began
        served_rss = peak_rss(server.process.pid)
        print(f"  the same photos one after another: {seconds:.1f} s, {args.count / seconds:.3f} images/s")
        print(f"  latency {min(latencies):.1f}–{max(latencies):.1f} s, peak RSS {served_rss / 2**30:.2f} GiB")
        print(f"  answers against srgan upscale's files: at most {worst} grey level(s) apart")

        buffer = io.BytesIO()
        synthetic_photo(args.client_size, args.client_size, seed=99).save(buffer, format="JPEG", quality=90)
        data = buffer.getvalue()
        statuses: Counter[int] = Counter()
        waits: list[float] = []

        def client() -> None:
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                sent = time.monotonic()
                status, _ = server.upscale(data, timeout=300)
                waits.append(time.monotonic() - sent)
                statuses[status] += 1

        clients = [threading.Thread(target=client) for _ in range(args.clients)]
        began = time.monotonic()
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        seconds = time.monotonic() - began
        fivexx = sum(count for status, count in statuses.items() if status >= 500)
        print(
            f"  {args.clients} clients × {args.seconds:.0f} s of {args.client_size}×{args.client_size} photos: "
            f"{sum(statuses.values())} answers {dict(statuses)}, {fivexx} 5xx, "
            f"{statuses[200] / seconds:.3f} images/s, latency median {np.median(waits):.1f} s, max {max(waits):.1f} s, "
            f"peak RSS {peak_rss(server.process.pid) / 2**30:.2f} GiB"
        )
        server.stop()

        if args.tensor:
            server = Server(f"runs:/{run.info.run_id}/generator", env, 900, tmp / "serve-tensor.log")
            for side in (128, 256):
                lr_img = np.random.default_rng(side).random((1, 3, side, side), dtype=np.float32)
                sent = time.monotonic()
                answer = requests.post(
                    f"{server.url}/invocations",
                    data=json.dumps({"inputs": lr_img.tolist()}),
                    headers={"Content-Type": "application/json"},
                    timeout=900,
                )
                seconds, peak = time.monotonic() - sent, peak_rss(server.process.pid) / 2**30
                print(
                    f"tensor model, {side}×{side} float32: HTTP {answer.status_code}, {seconds:.1f} s, "
                    f"{len(answer.content) / 1e6:.0f} MB answer, peak RSS {peak:.2f} GiB"
                )
            server.stop()

        if args.big:
            big = tmp / "big"
            big.mkdir()
            synthetic_photo(3000, 2000).save(big / "photo.jpg", quality=90)
            seconds, rss = srgan_upscale(big / "photo.jpg", big / "photo.png", env)
            print(f"srgan upscale of a 3000×2000 photo: {seconds:.0f} s, peak RSS {rss / 2**30:.2f} GiB")
            server = Server(uri, env, 900, tmp / "serve-big.log")
            sent = time.monotonic()
            status, png = server.upscale((big / "photo.jpg").read_bytes())
            seconds = time.monotonic() - sent
            print(
                f"served (-t 900): HTTP {status}, {seconds:.0f} s, {len(png) / 1e6:.0f} MB PNG, "
                f"peak RSS {peak_rss(server.process.pid) / 2**30:.2f} GiB, "
                f"{differs(png, big / 'photo.png')} grey level(s) from srgan upscale's"
            )
            server.stop()


if __name__ == "__main__":
    main()
