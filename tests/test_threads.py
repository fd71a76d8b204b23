"""`runtime.threads: auto`: concurrent srgan processes split the cores, and take them back.

Real processes, real locks: each child claims its share the way a stage does (through
`resolve_runtime`) and reports torch's pool size. TMPDIR points the lock folder at a temporary
directory, so other srgan processes on the machine do not count.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from srgan.core import threads
from srgan.core.config import RuntimeParams, parse_params
from srgan.core.errors import SrganError

# Claims through resolve_runtime, prints torch's pool size, then does what stdin says:
# "check" rebalances and prints the size again, "exit" ends.
CHILD = """
import sys, time, torch
from srgan.core.config import RuntimeParams
from srgan.core.runtime import resolve_runtime
rt = resolve_runtime(RuntimeParams(device="cpu", threads=sys.argv[1] if sys.argv[1] == "auto" else int(sys.argv[1])))
print(torch.get_num_threads(), flush=True)
for line in sys.stdin:
    if line.strip() == "exit":
        break
    time.sleep(1.1)  # past the recheck interval
    rt.rebalance()
    print(torch.get_num_threads(), flush=True)
"""

CORES = len(os.sched_getaffinity(0))


class Child:
    def __init__(self, tmp_path: Path, setting: str = "auto") -> None:
        env = {**os.environ, "TMPDIR": str(tmp_path)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, setting], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.threads = int(self.proc.stdout.readline())

    def check(self) -> int:
        self.proc.stdin.write("check\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def exit(self) -> None:
        self.proc.stdin.write("exit\n")
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.mark.skipif(CORES < 2, reason="one core: every share is one thread")
def test_auto_splits_the_cores_while_two_processes_run_and_the_survivor_takes_them_back(tmp_path: Path) -> None:
    first = Child(tmp_path)
    assert first.threads == CORES
    second = Child(tmp_path)
    assert second.threads == CORES // 2
    assert first.check() == CORES // 2  # the running job gave up its cores
    second.exit()
    assert first.check() == CORES
    first.exit()
    assert not list((tmp_path / f"srgan-jobs-{os.getuid()}").iterdir())  # released at exit


@pytest.mark.skipif(CORES < 2, reason="one core: every share is one thread")
def test_a_fixed_count_is_kept_but_still_counts_as_a_process(tmp_path: Path) -> None:
    fixed = Child(tmp_path, str(CORES))
    assert fixed.threads == CORES
    auto = Child(tmp_path)
    assert auto.threads == CORES // 2
    assert fixed.check() == CORES
    auto.exit()
    fixed.exit()


def test_a_killed_process_gives_its_part_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(threads.tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    children = [Child(tmp_path) for _ in range(2)]
    assert threads.live_jobs() == 2
    children[0].proc.send_signal(signal.SIGKILL)
    children[0].proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while threads.live_jobs() != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert threads.live_jobs() == 1
    assert len(list(threads.folder().glob("*.lock"))) == 1  # the dead process's file was swept
    children[1].exit()
    assert threads.live_jobs() == 0


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("many", "params: runtime.threads must be 'auto' or an integer, got 'many'"),
        (0, "params: runtime.threads=0 must be auto or a thread count >= 1"),
        (True, "params: runtime.threads must be 'auto' or an integer, got True"),
    ],
)
def test_runtime_threads_takes_auto_or_a_count(value: object, error: str) -> None:
    assert parse_params({"runtime": {"threads": 3}}).runtime.threads == 3
    assert parse_params({}).runtime == RuntimeParams(threads="auto")
    with pytest.raises(SrganError) as caught:
        parse_params({"runtime": {"threads": value}})
    assert str(caught.value) == error


@pytest.mark.parametrize(
    ("value", "words"), [("0", "must be > 0, got 0"), ("all", "must be auto or a thread count, got 'all'")]
)
def test_srgan_threads_option_names_what_it_takes(tmp_path: Path, value: str, words: str) -> None:
    srgan = Path(sys.executable).with_name("srgan")
    done = subprocess.run(
        [srgan, "upscale", "--threads", value, "in.png", "-o", "out.png"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"srgan upscale: error: argument --threads: {words}"


def test_computing_claims_a_share_for_the_work_only_and_keeps_a_share_already_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model server's worker counts as a job only while it computes an image; in a stage (which
    holds a share) the same code leaves the stage's share and its setting as they were."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    assert threads._share is None and threads.live_jobs() == 0
    with threads.computing() as share:
        assert threads.live_jobs() == 1 and share.setting == "auto"
    assert threads._share is None and threads.live_jobs() == 0

    stage = threads.claim(1)
    with threads.computing() as share:
        assert share is stage and threads.live_jobs() == 1
    assert threads._share is stage and stage.setting == 1 and threads.live_jobs() == 1
