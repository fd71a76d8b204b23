"""The download stage against a real HTTP server on localhost and real archives built here."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import socket
import stat
import struct
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import skimage.data

from srgan.core.errors import SrganError
from srgan.data import sources
from srgan.data.archive import extract
from srgan.data.download import fetch, materialize

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20


def _payload(size: int) -> bytes:
    """Deterministic bytes that do not compress or repeat, so a misplaced resume shows in the hash."""
    blocks = (hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(size // 32 + 1))
    return b"".join(blocks)[:size]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Site:
    """What the test server serves, how it misbehaves, and every request it saw."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_after: int | None = None  # cut the next response's body after this many bytes
        self.ignore_range = False  # answer 200 with the whole file, as servers without Range do
        self.seen: list[dict[str, object]] = []  # {"path", "range", "status"} per request
        self.base = ""

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"


def _handler(site: Site) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = site.files.get(self.path.lstrip("/"))
            requested = self.headers.get("Range")
            if data is None:
                site.seen.append({"path": self.path, "range": requested, "status": 404})
                self.send_error(404)
                return
            start, status = 0, 200
            if requested and not site.ignore_range:
                start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))
                status = 206 if start < len(data) else 416
            site.seen.append({"path": self.path, "range": requested, "status": status})
            self.send_response(status)
            if status == 416:
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            body = data[start:]
            if site.cut_after is not None:
                cut, site.cut_after = site.cut_after, None
                self.wfile.write(body[:cut])
                self.connection.shutdown(socket.SHUT_RDWR)  # the client sees a short body, then EOF
                return
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def site() -> Iterator[Site]:
    site = Site()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(site))
    site.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield site
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# --- fetch: resume, verify, cache, errors ---------------------------------------------------------


def test_resume_after_cut_connection_is_byte_identical(site: Site, tmp_path: Path) -> None:
    data = _payload(3 * MiB + 12345)
    site.files["big.tar"] = data
    site.cut_after = 2 * MiB + MiB // 2
    dest = fetch(site.url("big.tar"), tmp_path / "big.tar", md5=hashlib.md5(data).hexdigest(), progress=False)
    assert _sha256(dest.read_bytes()) == _sha256(data)
    assert [s["status"] for s in site.seen] == [200, 206]
    assert site.seen[0]["range"] is None
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", site.seen[1]["range"]).group(1))
    # The first connection delivered some whole chunks before the cut; the second asked for the rest.
    assert 0 < resumed_at <= 2 * MiB + MiB // 2
    assert _all_files(tmp_path) == ["big.tar"]


def test_server_ignoring_range_restarts_from_zero(site: Site, tmp_path: Path) -> None:
    data = _payload(2 * MiB + 777)
    site.files["a.zip"] = data
    site.cut_after = MiB + 10
    site.ignore_range = True
    dest = fetch(site.url("a.zip"), tmp_path / "a.zip", progress=False)
    assert _sha256(dest.read_bytes()) == _sha256(data)
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", site.seen[1]["range"]).group(1))
    assert 0 < resumed_at <= MiB + 10
    assert site.seen[1]["status"] == 200


def test_complete_partial_file_is_answered_416_and_kept(site: Site, tmp_path: Path) -> None:
    data = _payload(5000)
    site.files["a.tar"] = data
    (tmp_path / "a.tar.part").write_bytes(data)
    dest = fetch(site.url("a.tar"), tmp_path / "a.tar", md5=hashlib.md5(data).hexdigest(), progress=False)
    assert dest.read_bytes() == data
    assert site.seen == [{"path": "/a.tar", "range": "bytes=5000-", "status": 416}]


def test_verified_archive_is_not_downloaded_again(site: Site, tmp_path: Path) -> None:
    data = _payload(1000)
    site.files["a.tar"] = data
    md5 = hashlib.md5(data).hexdigest()
    fetch(site.url("a.tar"), tmp_path / "a.tar", md5=md5, progress=False)
    fetch(site.url("a.tar"), tmp_path / "a.tar", md5=md5, progress=False)
    assert len(site.seen) == 1


def test_checksum_mismatch_names_file_and_both_sums(site: Site, tmp_path: Path) -> None:
    data = _payload(4096)
    site.files["benchmark.tar"] = data
    wrong = "0" * 32
    with pytest.raises(SrganError) as err:
        fetch(site.url("benchmark.tar"), tmp_path / "benchmark.tar", md5=wrong, progress=False)
    message = str(err.value)
    assert "benchmark.tar" in message
    assert wrong in message
    assert hashlib.md5(data).hexdigest() in message
    # The bad download is kept aside; nothing claims to be the verified archive.
    assert _all_files(tmp_path) == ["benchmark.tar.bad"]
    assert (tmp_path / "benchmark.tar.bad").read_bytes() == data


def test_connection_refused_is_one_line_naming_url_and_local_folder(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/benchmark.tar"
    with pytest.raises(SrganError) as err:
        fetch(url, tmp_path / "benchmark.tar", progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert f"cannot download {url} (ConnectionError)" in message
    assert "folder" in message and "data.eval=[" in message
    assert _all_files(tmp_path) == []


def test_http_error_names_status(site: Site, tmp_path: Path) -> None:
    with pytest.raises(SrganError, match=r"cannot download http://127\.0\.0\.1:\d+/gone\.zip \(HTTP 404 Not Found\)"):
        fetch(site.url("gone.zip"), tmp_path / "gone.zip", progress=False)


# --- extract: safety ------------------------------------------------------------------------------


def _zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def _zip_symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix, whose mode bits live in the high half of external_attr
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def _tar(path: Path, entries: list[tuple[tarfile.TarInfo | str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as tar:
        for info, data in entries:
            if isinstance(info, str):
                info = tarfile.TarInfo(info)
            if info.isfile():
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _tar_link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


# (format, case, entries given the path of a folder outside the target, expected reason)
EVIL = [
    ("zip", "dotdot", lambda out: [("ok.png", b"ok"), ("../evil.png", b"evil")], "has a '..' component"),
    ("zip", "backslash dotdot", lambda out: [("ok.png", b"ok"), ("..\\evil.png", b"evil")], "has a '..' component"),
    ("zip", "absolute", lambda out: [("ok.png", b"ok"), (f"{out}/evil.png", b"evil")], "has an absolute path"),
    ("zip", "drive letter", lambda out: [("ok.png", b"ok"), ("C:/evil.png", b"evil")], "has a drive letter"),
    (
        "zip",
        "symlink",
        lambda out: [("ok.png", b"ok"), _zip_symlink("link.png", f"{out}/secret.png")],
        "is a symbolic link",
    ),
    ("tar", "dotdot", lambda out: [("ok.png", b"ok"), ("../evil.png", b"evil")], "has a '..' component"),
    ("tar", "absolute", lambda out: [("ok.png", b"ok"), (f"{out}/evil.png", b"evil")], "has an absolute path"),
    (
        "tar",
        "symlink out",
        lambda out: [("ok.png", b"ok"), (_tar_link("link.png", "../../outside/x.png"), b"")],
        "outside the destination",
    ),
    (
        "tar",
        "absolute symlink",
        lambda out: [("ok.png", b"ok"), (_tar_link("link.png", f"{out}/x.png"), b"")],
        "a link to an absolute path",
    ),
    # The classic two-step: a link to a folder outside, then a file written through it.
    (
        "tar",
        "file through link",
        lambda out: [(_tar_link("dir", ".."), b""), ("dir/evil.png", b"evil")],
        "outside the destination",
    ),
]


@pytest.mark.parametrize(("kind", "case", "entries", "reason"), EVIL, ids=[f"{e[0]}-{e[1]}" for e in EVIL])
def test_unsafe_archive_is_refused_whole(
    kind: str, case: str, entries: Callable[[Path], list], reason: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    archive = tmp_path / f"evil.{kind}"
    (_zip if kind == "zip" else _tar)(archive, entries(outside))
    target = tmp_path / "box" / "target"
    with pytest.raises(SrganError) as err:
        extract(archive, target, max_bytes=10**6)
    assert str(err.value).startswith(f"{archive}: refusing the whole archive: member ")
    assert reason in str(err.value)
    # Nothing was written anywhere: not outside, not even the archive's good member.
    assert _all_files(tmp_path) == ["box", "box/target", archive.name]


def test_unsafe_member_is_named(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "evil.zip", [("a/../../evil.png", b"x")])
    with pytest.raises(SrganError, match=r"member 'a/\.\./\.\./evil\.png' has a '\.\.' component"):
        extract(archive, tmp_path / "target", max_bytes=10**6)


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_unpacked_size_bound_refuses_before_writing(kind: str, tmp_path: Path) -> None:
    entries = [("a.png", _payload(1500)), ("b.png", _payload(1500)), ("notes.txt", _payload(5000))]
    archive = (_zip if kind == "zip" else _tar)(tmp_path / f"big.{kind}", entries)
    target = tmp_path / "target"
    with pytest.raises(SrganError) as err:
        extract(archive, target, max_bytes=2000)
    # 3000 bytes of images: the text file is not extracted, so it does not count.
    assert f"{archive}: its image members unpack to 3e-06 GB (3000 bytes)" in str(err.value)
    assert "download.max_unpacked_gb=2e-06" in str(err.value)
    assert _all_files(target) == []
    assert extract(archive, target, max_bytes=3000) == [{"file": "notes.txt", "reason": "not an image file extension"}]


def test_zip_member_larger_than_declared_is_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "bomb.zip", [("a.png", b"\0" * 1_000_000)])
    raw = bytearray(archive.read_bytes())
    # Declare 10 bytes for a member that inflates to 1 MB, in the local header and the central directory.
    local, central = raw.find(b"PK\x03\x04"), raw.find(b"PK\x01\x02")
    raw[local + 22 : local + 26] = struct.pack("<I", 10)
    raw[central + 24 : central + 28] = struct.pack("<I", 10)
    archive.write_bytes(bytes(raw))
    target = tmp_path / "target"
    with pytest.raises(SrganError, match="corrupt archive"):
        extract(archive, target, max_bytes=100)
    assert sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) <= 10


def test_registry_members_regex_picks_and_renames(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "benchmark.tar",
        [
            ("benchmark/Set5/HR/baby.png", b"baby"),
            ("benchmark/Set5/HR/Thumbs.db", b"junk"),
            ("benchmark/Set5/LR_bicubic/X4/babyx4.png", b"lr"),
            ("benchmark/Set14/HR/zebra.png", b"zebra"),
        ],
    )
    target = tmp_path / "set5"
    skipped = extract(archive, target, sources.REGISTRY["set5"].archives[0].members, max_bytes=10**6)
    assert _all_files(target) == ["baby.png"]
    assert (target / "baby.png").read_bytes() == b"baby"
    assert skipped == [{"file": "Thumbs.db", "reason": "not an image file extension"}]


# --- materialize: whole sources -------------------------------------------------------------------

GOOD = {
    "photos/a.png": _payload(2000),
    "photos/sub/b.JPG": _payload(3000)[::-1],
    "photos/README.txt": b"not an image\n",
}


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_good_archive_url_extracts_images_with_manifest(kind: str, site: Site, tmp_path: Path) -> None:
    archive = (_zip if kind == "zip" else _tar)(tmp_path / f"photos.{kind}", list(GOOD.items()))
    site.files[f"photos.{kind}"] = archive.read_bytes()
    url = site.url(f"photos.{kind}")
    out, cache = tmp_path / "raw", tmp_path / "cache"
    [folder] = materialize(url, out, cache, max_bytes=10**6)
    assert folder == out / sources.slug(url)
    manifest = json.loads((folder / "manifest.json").read_text())
    images = {k: v for k, v in GOOD.items() if not k.endswith(".txt")}
    assert manifest == {
        "source": url,
        "files": [{"file": k, "size": len(v), "sha256": _sha256(v)} for k, v in sorted(images.items())],
        "skipped": [{"file": "photos/README.txt", "reason": "not an image file extension"}],
        "archive_sha256": _sha256(archive.read_bytes()),
    }
    assert _all_files(folder) == ["manifest.json", "photos", "photos/a.png", "photos/sub", "photos/sub/b.JPG"]
    assert (folder / "photos/sub/b.JPG").read_bytes() == GOOD["photos/sub/b.JPG"]
    assert _all_files(out) == [sources.slug(url), *(f"{sources.slug(url)}/{f}" for f in _all_files(folder))]


def test_sample_materializes_without_network(tmp_path: Path) -> None:
    photos = Path(skimage.data.__file__).parent
    out, cache = tmp_path / "raw", tmp_path / "cache"
    folders = materialize("sample", out, cache, max_bytes=10**6)
    assert folders == [out / "sample" / "train", out / "sample" / "eval"]
    for folder, names in zip(folders, (sources.SAMPLE_TRAIN, sources.SAMPLE_EVAL)):
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["source"] == "sample"
        assert manifest["skipped"] == []
        assert [f["file"] for f in manifest["files"]] == sorted(names)
        for entry in manifest["files"]:
            original = (photos / entry["file"]).read_bytes()
            assert entry["size"] == len(original)
            assert entry["sha256"] == _sha256(original)
    assert len(os.listdir(folders[0])) == 12 + 1 and len(os.listdir(folders[1])) == 4 + 1
    assert not cache.exists()


# --- the stage entry point ------------------------------------------------------------------------


def _run_stage(cwd: Path, params: str) -> subprocess.CompletedProcess[str]:
    (cwd / "params.yaml").write_text(params)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "stages.download", "--out", "raw"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.e2e  # the stage's own process, as DVC runs it
def test_stage_rejects_unknown_source_before_any_work(tmp_path: Path) -> None:
    result = _run_stage(tmp_path, "data:\n  train: sample\n  eval: [sample, nosuch]\n")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: params: data.eval[1]='nosuch' is not a folder, an archive URL or one of: " + ", ".join(sources.REGISTRY)
    ]
    assert sorted(os.listdir(tmp_path)) == ["params.yaml"]


@pytest.mark.e2e  # the stage's own process, as DVC runs it
def test_stage_writes_local_folder_and_sample(tmp_path: Path) -> None:
    images = tmp_path / "mine"
    (images / "deeper").mkdir(parents=True)
    (images / "x.png").write_bytes(b"x-bytes")
    (images / "deeper" / "y.jpeg").write_bytes(b"y-bytes")
    (images / "notes.md").write_text("hi")
    work = tmp_path / "work"
    work.mkdir()
    result = _run_stage(work, f"data:\n  train: {images}\n  eval: [sample]\n")
    assert result.returncode == 0, result.stderr
    slug = sources.slug(str(images))
    assert sorted(os.listdir(work / "raw")) == sorted([slug, "sample"])  # no staging folders left behind
    manifest = json.loads((work / "raw" / slug / "manifest.json").read_text())
    assert manifest["files"] == [
        {"file": "deeper/y.jpeg", "size": 7, "sha256": _sha256(b"y-bytes")},
        {"file": "x.png", "size": 7, "sha256": _sha256(b"x-bytes")},
    ]
    assert manifest["skipped"] == [{"file": "notes.md", "reason": "not an image file extension"}]
    assert sorted(os.listdir(work / "raw" / "sample")) == ["eval", "train"]
    assert f"download: {images} -> raw/{slug}" in result.stdout
