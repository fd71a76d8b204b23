"""What logging a training curve costs: the project's own sqlite store against a team server.

A team server (`srgan server`: PostgreSQL, MLflow with basic-auth) is started in a temporary
folder, with a user who logs in as a stage would. For each store, one `stage_run` logs `--points`
log steps of the train stage's eight scalars (losses and validation scores) through the `Tracker`:

- `put`: the training thread's time per log step (it only queues; the outbox sends),
- `sent`: the time per log step until the store has taken all of them (`Tracker.close`), which is
  what a log step costs the store, beside training;
- `sync`: for reference, the same points sent one `log_batch` call at a time on the calling
  thread, as stages logged before the outbox.

Ratios: each store's `sent` over sqlite's, measured in the same run. A training log step comes
every 10 updates (`srgan.training.loop.LOG_EVERY`), so the cost per update is a tenth of `sent`.

    .venv/bin/python benchmarks/tracking_cost.py [--points 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from srgan.core.runtime import cpu_name

KEYS = ("g_content", "g_pixel", "g_adv", "d_real", "d_fake", "d_x", "val_psnr", "val_lpips")
ADMIN, USER = "benchmark-admin-pw", ("bench", "benchmark-user-pw")


def measure(points: int) -> dict[str, float]:
    """Log `points` steps in one run of the current store; seconds per step for put, sent, sync."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from srgan.tracking.runs import stage_run

    values = {key: 0.5 for key in KEYS}
    with stage_run("benchmark", {}) as tracker:
        began = time.perf_counter()
        for step in range(points):
            tracker.log_metrics(values, step)
        put = time.perf_counter() - began
        tracker.close()
        sent = time.perf_counter() - began
        client = MlflowClient()
        began = time.perf_counter()
        for step in range(points):
            now = int(time.time() * 1000)
            client.log_batch(tracker.run_id, metrics=[Metric(f"sync_{k}", v, now, step) for k, v in values.items()])
        sync = time.perf_counter() - began
    return {"put_ms": 1e3 * put / points, "sent_ms": 1e3 * sent / points, "sync_ms": 1e3 * sync / points}


def start_server(folder: Path, port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "-m", "srgan.cli", "server", "--dir", str(folder), "--port", str(port)],
        env={**os.environ, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(360):
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.5)
    requests.post(
        f"{url}/api/2.0/mlflow/users/create",
        json={"username": USER[0], "password": USER[1]},
        auth=("admin", ADMIN),
        timeout=30,
    ).raise_for_status()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200, help="log steps per store")
    parser.add_argument("--port", type=int, default=5098)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DVC_ROOT"] = tmp  # the local store: <tmp>/mlflow.db
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        results["sqlite"] = measure(args.points)
        server = start_server(Path(tmp) / "server", args.port)
        try:
            os.environ.update(
                MLFLOW_TRACKING_URI=f"http://127.0.0.1:{args.port}",
                MLFLOW_TRACKING_USERNAME=USER[0],
                MLFLOW_TRACKING_PASSWORD=USER[1],
            )
            results["server"] = measure(args.points)
        finally:
            os.killpg(server.pid, 2)
            server.wait()
    for store in results.values():
        store["ratio"] = store["sent_ms"] / results["sqlite"]["sent_ms"]
    if args.json:
        print(json.dumps({"cpu": cpu_name(), "points": args.points, **results}))
        return
    print(f"{cpu_name()}, {args.points} log steps of {len(KEYS)} scalars each")
    print(f"{'store':8} {'put ms':>8} {'sent ms':>8} {'sync ms':>8} {'sent/sqlite':>12}")
    for name, r in results.items():
        print(f"{name:8} {r['put_ms']:8.3f} {r['sent_ms']:8.2f} {r['sync_ms']:8.2f} {r['ratio']:12.2f}")


if __name__ == "__main__":
    main()
