"""Archive extraction that writes only inside its target folder (what ``hrvlm data fetch`` extracts with).

A downloaded archive is data from elsewhere: before anything is written, every member is checked, and
the whole archive is refused (:class:`UnsafeArchive`) if one member has an absolute path, a ``..``
component, a path that resolves outside the target, a symbolic or hard link that points outside it,
or is a device or FIFO.  Tar files are then extracted with Python's ``data`` filter as well (PEP 706),
which re-checks every member as it is written; zip members are written one by one to their checked
paths (a zip symlink is refused).

torchvision's dataset classes extract through ``torchvision.datasets.utils._ARCHIVE_EXTRACTORS``;
:func:`safe_extractors` swaps those entries for :func:`safe_extract` while a fetch runs, so every
dataset's own download path extracts safely too.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath


class UnsafeArchive(ValueError):
    """An archive member would be written outside the target folder (or is a link or device)."""


def _inside(target: Path, name: str) -> bool:
    return os.path.commonpath([target, os.path.realpath(target / name)]) == str(target)


def _check_name(archive: Path, target: Path, name: str) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or os.path.isabs(name) or (path.parts and path.parts[0].endswith(":")):
        raise UnsafeArchive(f"{archive.name}: member {name!r} has an absolute path; refusing to extract the archive")
    if ".." in path.parts:
        raise UnsafeArchive(f"{archive.name}: member {name!r} climbs out of the target with '..'; refusing to "
                            f"extract the archive")
    if not _inside(target, str(path)):
        raise UnsafeArchive(f"{archive.name}: member {name!r} resolves outside {target}; refusing to extract the "
                            f"archive")


def check_tar(archive: Path, tar: tarfile.TarFile, target: Path) -> None:
    """Raise :class:`UnsafeArchive` unless every member of ``tar`` stays inside ``target``."""
    for member in tar.getmembers():
        _check_name(archive, target, member.name)
        if member.issym():
            link = PurePosixPath(member.linkname)
            if link.is_absolute() or not _inside(target, str(PurePosixPath(member.name).parent / link)):
                raise UnsafeArchive(f"{archive.name}: symlink {member.name!r} -> {member.linkname!r} points outside "
                                    f"the target; refusing to extract the archive")
        elif member.islnk():  # a hard link names another member, relative to the archive's root
            if PurePosixPath(member.linkname).is_absolute() or not _inside(target, member.linkname):
                raise UnsafeArchive(f"{archive.name}: hard link {member.name!r} -> {member.linkname!r} points outside "
                                    f"the target; refusing to extract the archive")
        elif not (member.isfile() or member.isdir()):
            raise UnsafeArchive(f"{archive.name}: member {member.name!r} is a device or FIFO; refusing to extract "
                                f"the archive")


def check_zip(archive: Path, zf: zipfile.ZipFile, target: Path) -> None:
    """Raise :class:`UnsafeArchive` unless every member of ``zf`` is a plain file or folder inside ``target``."""
    for info in zf.infolist():
        _check_name(archive, target, info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeArchive(f"{archive.name}: member {info.filename!r} is a symlink; refusing to extract the "
                                f"archive")


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Extract tar (any compression) or zip file ``archive`` into ``target``, every member checked first
    (nothing is written if one fails); returns ``target``."""
    archive, target = Path(archive), Path(os.path.realpath(target))
    target.mkdir(parents=True, exist_ok=True)
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as tar:
            check_tar(archive, tar, target)
            tar.extractall(target, filter="data")
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            check_zip(archive, zf, target)
            zf.extractall(target)
    else:
        raise UnsafeArchive(f"{archive.name} is neither a tar nor a zip archive")
    return target


def _torchvision_extractor(from_path, to_path, compression=None) -> None:
    safe_extract(from_path, to_path)  # tarfile and zipfile detect the compression themselves


@contextlib.contextmanager
def safe_extractors():
    """Inside the block, torchvision's archive extraction (``extract_archive``, and so every dataset's
    ``download``) goes through :func:`safe_extract`."""
    from torchvision.datasets import utils

    saved = dict(utils._ARCHIVE_EXTRACTORS)
    utils._ARCHIVE_EXTRACTORS.update({suffix: _torchvision_extractor for suffix in saved})
    try:
        yield
    finally:
        utils._ARCHIVE_EXTRACTORS.clear()
        utils._ARCHIVE_EXTRACTORS.update(saved)
