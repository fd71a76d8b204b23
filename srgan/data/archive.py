"""Extract untrusted archives (.tar, .tar.gz, .zip) safely: no member may land outside the source
folder, no link may point outside it, and the unpacked size is bounded before anything is written.
Only image members are extracted; the others are listed as skipped."""

from __future__ import annotations

import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import TypeVar

from srgan.core.errors import SrganError
from srgan.data.imageio import is_image

Skipped = list[dict[str, str]]  # [{"file": relpath, "reason": text}], as written to the manifest
_COPY_CHUNK = 1 << 20
M = TypeVar("M")  # an archive member: tarfile.TarInfo or zipfile.ZipInfo


def _unsafe_name(name: str) -> str | None:
    """Why a member path could land outside the target folder, or None when it cannot.

    Checked on both separators, since an archive made on Windows may use either.
    """
    if name.startswith(("/", "\\")):
        return "an absolute path"
    if re.match(r"[A-Za-z]:", name):
        return "a drive letter"
    if ".." in re.split(r"[/\\]", name):
        return "a '..' component"
    return None


def _refuse(archive: Path, member: str, why: str) -> SrganError:
    return SrganError(f"{archive}: refusing the whole archive: member {member!r} {why}")


def _select(archive: Path, name: str, members_regex: str | None) -> str | None:
    """A member's path under the source folder, or None when it is not part of the source."""
    if members_regex is None:
        return name
    match = re.fullmatch(members_regex, name)
    if not match:
        return None
    # Group 1 is a piece of an already checked name, but a piece can still start with '/'.
    why = _unsafe_name(match.group(1))
    if why:
        raise _refuse(archive, name, f"maps to {match.group(1)!r}, which has {why}")
    return match.group(1)


def _check_size(archive: Path, total: int, max_bytes: int) -> None:
    if total > max_bytes:
        raise SrganError(
            f"{archive}: its image members unpack to {total / 1e9:.3g} GB ({total} bytes), over "
            f"download.max_unpacked_gb={max_bytes / 1e9:g}; raise that key if you trust the archive"
        )


def _choose(
    archive: Path, entries: list[tuple[M, str, bool, str | None]], members_regex: str | None, skipped: Skipped
) -> list[tuple[M, str]]:
    """The members to extract, with their paths under the source folder; the others of the source
    go to `skipped`. entries: (member, name, is a folder, why it cannot be extracted or None)."""
    chosen = []
    for member, name, is_dir, problem in entries:
        rel = _select(archive, name, members_regex)
        if rel is None or is_dir:
            continue
        if not is_image(rel):
            skipped.append({"file": rel, "reason": "not an image file extension"})
        elif problem:
            skipped.append({"file": rel, "reason": problem})
        else:
            chosen.append((member, rel))
    return chosen


def _check_members(archive: Path, members: list[tuple[str, str | None]]) -> None:
    """Refuse the whole archive if any member's name could land outside the target folder, or the
    member is unsafe for another reason (the second item: why, or None)."""
    for name, unsafe in members:
        why = _unsafe_name(name)
        if why:
            raise _refuse(archive, name, f"has {why}")
        if unsafe:
            raise _refuse(archive, name, unsafe)


def _filter_refusal(member: tarfile.TarInfo, target: Path) -> str | None:
    """Why tarfile's 'data' filter refuses a member (a link pointing outside, a device...), or None."""
    try:
        tarfile.data_filter(member, str(target))
    except tarfile.FilterError as err:
        return f"is unsafe ({err})"
    return None


def _extract_tar(archive: Path, target: Path, members_regex: str | None, max_bytes: int) -> Skipped:
    skipped: Skipped = []
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        # Check every member before writing anything. The 'data' filter refuses links that point
        # outside and special files, but it strips a leading '/' instead of refusing it, so
        # names get the same explicit check as zip members.
        _check_members(archive, [(m.name, _filter_refusal(m, target)) for m in members])
        not_regular = "a link or special file, not a regular file"
        entries = [(m, m.name, m.isdir(), None if m.isfile() else not_regular) for m in members]
        chosen = _choose(archive, entries, members_regex, skipped)
        _check_size(archive, sum(m.size for m, _ in chosen), max_bytes)
        for member, rel in chosen:
            tar.extract(member.replace(name=rel, deep=False), target, filter="data")
    return skipped


def _extract_zip(archive: Path, target: Path, members_regex: str | None, max_bytes: int) -> Skipped:
    skipped: Skipped = []
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        # zipfile's own extract silently rewrites '..' and absolute names; refuse them instead,
        # for every member, before anything is written.
        links = [(i.filename, "is a symbolic link" if stat.S_ISLNK(i.external_attr >> 16) else None) for i in infos]
        _check_members(archive, links)
        chosen = _choose(archive, [(i, i.filename, i.is_dir(), None) for i in infos], members_regex, skipped)
        _check_size(archive, sum(info.file_size for info, _ in chosen), max_bytes)
        for info, rel in chosen:
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            # zipfile stops each member at its declared `file_size` and then fails the CRC check,
            # so a member that lies about its size cannot write past the bound checked above.
            with zf.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, _COPY_CHUNK)
    return skipped


def extract(archive: Path, target: Path, members_regex: str | None = None, *, max_bytes: int) -> Skipped:
    """Unpack the image members of a .zip/.tar/.tar.gz `archive` into the folder `target`.

    `members_regex` (a registered source's `Archive.members`) picks the members that belong to the
    source; its group 1 is the path under `target`. Without it every member belongs, at its own
    relative path. Members that belong but are not images are returned as skipped entries.
    The whole archive is refused (SrganError) if any member could escape `target`, or if the
    images add up to more than `max_bytes` (the key `download.max_unpacked_gb`).
    """
    target.mkdir(parents=True, exist_ok=True)
    try:
        # tar first: a tar whose last member is a zip can look like a zip to is_zipfile.
        if tarfile.is_tarfile(archive):
            return _extract_tar(archive, target, members_regex, max_bytes)
        if zipfile.is_zipfile(archive):
            return _extract_zip(archive, target, members_regex, max_bytes)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        raise SrganError(f"{archive}: corrupt archive ({err})") from None
    raise SrganError(f"{archive}: not a zip or tar archive")
