"""`make paper`'s overrides end to end, through the real DVC CLI in a tiny copy of the project:
Mirflickr25k and the benchmark archive from a localhost HTTP server, VGG54 on the packaged
Oxford VGG19, the paper's crop size; tiny step counts so it finishes in a minute."""

from __future__ import annotations

import functools
import http.server
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from project import BIN, make_project, mlflow_runs, photo, run

pytestmark = pytest.mark.e2e


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_make_paper_overrides_run_end_to_end_with_vgg54(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    www, url = http_root
    rng = np.random.default_rng(1)
    # Laid out like the real archives: mirflickr/imN.jpg, and benchmark/<Set>/HR/*.png.
    with zipfile.ZipFile(www / "mirflickr25k.zip", "w") as archive:
        for i in range(1, 4):
            buffer = io.BytesIO()
            photo(rng, 300, 280).save(buffer, format="JPEG", quality=95)
            archive.writestr(f"mirflickr/im{i}.jpg", buffer.getvalue())
        archive.writestr("mirflickr/doc/license.txt", "test")
    with tarfile.open(www / "benchmark.tar", "w") as archive:
        for name in ("Set5/HR/baby.png", "Set14/HR/bridge.png"):
            buffer = io.BytesIO()
            photo(rng, 104, 200).save(buffer, format="PNG")  # NIQE's least: two 96-px blocks after the crop
            info = tarfile.TarInfo(f"benchmark/{name}")
            info.size = len(buffer.getvalue())
            archive.addfile(info, io.BytesIO(buffer.getvalue()))
    project = make_project(tmp_path, {"runtime": {"workers": 0}, "preprocess": {"max_val_patches": 2}})
    extra = (
        f"-S data.train={url}/mirflickr25k.zip -S 'data.eval=[{url}/benchmark.tar]' "
        "-S model.blocks=2 -S pretrain.steps=2 -S train.steps=2 -S pretrain.batch_size=2 -S train.batch_size=2 "
        "-S pretrain.val_every=2 -S train.val_every=2"
        # make paper asks for a GPU (runtime.device=cuda); the last value of a key wins, and the
        # test's tiny run stays on the CPU, GPU or not.
        " -S runtime.device=cpu"
    )
    venv = BIN.parent
    run(["make", "-o", str(venv / ".installed"), "paper", f"VENV={venv}", f"PAPER_EXTRA={extra}"], project, timeout=900)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    text = json.dumps(shown)
    assert '"paper"' in text and "vgg54" in text and "mirflickr25k.zip" in text
    train_runs = [r for r in mlflow_runs(project) if r.data.tags["stage"] == "train"]
    assert train_runs and train_runs[-1].data.params["train.content_loss"] == "vgg54"
    assert train_runs[-1].data.params["train.crop_size"] == "256"
    assert train_runs[-1].data.params["train.vgg_weights"] == "oxford"  # the packaged weights: offline
    assert train_runs[-1].data.tags["dvc_exp"] == "paper"
    pretrain_runs = [r for r in mlflow_runs(project) if r.data.tags["stage"] == "pretrain"]
    assert pretrain_runs[-1].data.params["pretrain.init"] == "none"  # from scratch, as the paper
    assert pretrain_runs[-1].data.tags["init.spec"] == "none"
    assert (
        "-S runtime.device=cuda" in (project / "Makefile").read_text().split("PAPER :=", 1)[1].split("PAPER_EXTRA")[0]
    )
    assert train_runs[-1].data.params["runtime.device"] == "cpu"
