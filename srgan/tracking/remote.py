"""Where runs are tracked, and whether that tracking server answers and takes this login.

A stage against a server that is down, mistyped, or refuses the login should stop in seconds with
one line, not after MLflow's minutes of HTTP retries, and not after hours of training. This module
asks the server's REST API one question with a short timeout (`check_server`); it imports neither
mlflow nor torch, so the params check runs it in well under a second.

Logins are MLflow's own: `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` (basic auth) or
`MLFLOW_TRACKING_TOKEN` (bearer), read from the environment and never written anywhere.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlparse

import requests

from srgan.core.errors import SrganError
from srgan.core.runtime import project_root

EXPERIMENT = "srgan"
PROBE_TIMEOUT_S = 5.0  # connect and read: a live server answers this in milliseconds
LOGIN = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
# How long a stage keeps working while the store does not answer, before it stops with its checkpoint.
PATIENCE_ENV = "SRGAN_TRACKING_PATIENCE_S"
PATIENCE_DEFAULT_S = 600.0


def tracking_uri() -> str:
    """`$MLFLOW_TRACKING_URI` if set, else the project's own sqlite store `<root>/mlflow.db`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def patience_s() -> float:
    """`$SRGAN_TRACKING_PATIENCE_S`: seconds a stage keeps retrying (and training) while the
    tracking store does not answer; `PATIENCE_DEFAULT_S` unless set."""
    raw = os.environ.get(PATIENCE_ENV, "")
    if not raw:
        return PATIENCE_DEFAULT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise SrganError(f"{PATIENCE_ENV}={raw!r}: not a positive number of seconds; unset it for the default")
    return value


def is_server(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def shown(uri: str) -> str:
    """`uri` as messages print it: a password written into it (`http://user:pw@host`) masked."""
    return re.sub(r"//([^/@:]+):[^/@]*@", r"//\1:***@", uri)


def check_server(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Refuse, in one line naming `uri`, a tracking server that does not answer within `timeout`
    (wrong host or port, http against https), or that refuses this login; a local store passes.

    The question is the one every stage asks first (does experiment `srgan` exist?), so a server
    that answers it, 200 or 404, will take the stage's run; a user who may read but not write is
    refused when the stage creates its run, in one line too (`srgan.tracking.store.retry`).
    """
    if not is_server(uri):
        return
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN", "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true"
    verify: bool | str = False if insecure else os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True
    where = shown(uri)
    try:
        answer = requests.get(
            f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name",
            params={"experiment_name": EXPERIMENT},
            auth=(user, password) if user else None,
            headers=headers,
            timeout=timeout,
            verify=verify,
        )
    except requests.exceptions.SSLError as err:
        raise SrganError(
            f"{where}: TLS failed ({_reason(err)}); use http:// for a server without TLS, or set "
            "MLFLOW_TRACKING_SERVER_CERT_PATH to its certificate"
        ) from None
    except requests.exceptions.Timeout:
        raise SrganError(
            f"{where}: the MLflow tracking server did not answer in {timeout:g} s; check MLFLOW_TRACKING_URI "
            "(host, port, http or https) and that the server is up"
        ) from None
    except requests.exceptions.RequestException as err:
        raise SrganError(
            f"{where}: the MLflow tracking server does not answer ({_reason(err)}); check MLFLOW_TRACKING_URI "
            "(host, port, http or https) and that the server is up"
        ) from None
    if answer.status_code == 401:
        who = f"refused the login of user {user!r}" if user else "asks for a login"
        raise SrganError(f"{where}: the tracking server {who} (HTTP 401); set {LOGIN} to an account on it")
    if answer.status_code == 403:
        raise SrganError(
            f"{where}: user {user!r} may not read experiment {EXPERIMENT!r} (HTTP 403); "
            "the server's admin grants it (docs/scaling.md: A team's tracking server)"
        )
    if answer.status_code not in (200, 404) or "json" not in answer.headers.get("content-type", ""):
        raise SrganError(
            f"{where}: answers HTTP {answer.status_code} to MLflow's REST API; is it an MLflow tracking server "
            "(check MLFLOW_TRACKING_URI's host and port)?"
        )


def refusal(uri: str, status: int) -> SrganError:
    """The one line for a server that refused a call with HTTP 401 or 403 while a stage ran."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    if status == 401:
        return SrganError(f"{shown(uri)}: the tracking server refused the login (HTTP 401); set {LOGIN}")
    return SrganError(
        f"{shown(uri)}: user {user!r} may not write to experiment {EXPERIMENT!r} or model srgan-generator "
        "(HTTP 403, permission denied); the server's admin grants EDIT (docs/scaling.md: A team's tracking server)"
    )


def _reason(err: Exception) -> str:
    """The cause at the bottom of a requests error ("Connection refused", "wrong version number")."""
    text = str(err)
    for pattern in (r"\[SSL: [^\]]+\] ([^('\")]+)", r"\[Errno -?\d+\] ([^('\")]+)"):
        found = re.search(pattern, text)
        if found:
            return found.group(1).strip()
    return type(err).__name__
