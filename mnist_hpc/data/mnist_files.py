"""The four MNIST files, offline first: find them (.gz or decompressed), verify them (md5, idx
header, counts), cache the decompressed copy, download them only when asked, parse them into
uint8 image and int64 label tensors."""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import zlib
from pathlib import Path
from typing import Optional

import torch

from ..errors import UsageError
from ..files import atomic_write
from ..job.watchdog import interruptible

# name -> (md5 of the uncompressed file, idx magic number, item count). Content is checked by
# the uncompressed md5: one .gz here was re-compressed, so its own md5 differs from torchvision's.
FILES = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 2051, 60000),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 2049, 60000),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 2051, 10000),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 2049, 10000),
}
# seconds one network operation of --download (connect, a proxy's answer, one read) may
# wait: a proxy or mirror that never answers would otherwise hold the job until walltime.
# torchvision tries two mirrors per file and gives up at the first file that fails.
DOWNLOAD_TIMEOUT_S = 20.0
_PLACE = ("copy the four MNIST .gz files into {raw} (this repo carries them in "
          "data/MNIST/raw/) or point --data-dir at a directory holding MNIST/raw/")
_FIX = _PLACE + ", or pass --download"


def raw_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def _check_header(name: str, data: bytes, where: Path) -> None:
    """Magic number and counts, so a wrong file gets a message more precise than an md5."""
    _, magic, count = FILES[name]
    if len(data) < 8:
        raise UsageError(f"MNIST file {where} is truncated ({len(data)} bytes); "
                         f"replace it with a good copy")
    found_magic = int.from_bytes(data[0:4], "big")
    found_count = int.from_bytes(data[4:8], "big")
    if found_magic != magic:
        raise UsageError(f"MNIST file {where} has magic number {found_magic}, expected {magic}: "
                         f"it is not the idx file {name}; replace it with a good copy")
    if found_count != count:
        raise UsageError(f"MNIST file {where} holds {found_count} items, expected {count}; "
                         f"replace it with a good copy")


def _verified(name: str, data: bytes, where: Path) -> bytes:
    _check_header(name, data, where)
    digest = hashlib.md5(data).hexdigest()
    if digest != FILES[name][0]:
        raise UsageError(f"MNIST file {where} is corrupt or truncated (md5 {digest}, expected "
                         f"{FILES[name][0]}); replace it with a good copy")
    return data


def _read(path: Path) -> bytearray:
    """The file's bytes, in a writable buffer that the tensors then share (``_parse``)."""
    try:
        with path.open("rb") as handle:
            data = bytearray(os.fstat(handle.fileno()).st_size)
            del data[handle.readinto(data):]  # a file that shrank meanwhile: what was read
            return data
    except OSError as exc:
        raise UsageError(f"cannot read MNIST file {path}: {exc.strerror}; "
                         f"check its permissions (chmod a+r)")


def _write_cache(path: Path, data: bytes) -> None:
    """Keep the decompressed copy for next time, atomically; skip if the folder is read-only."""
    try:
        atomic_write(path, data)
    except OSError:
        pass


def read_file(data_dir: str | Path, name: str) -> Optional[bytearray]:
    """Verified content of one MNIST file, or None if neither it nor its .gz exists."""
    folder = raw_dir(data_dir)
    plain, packed = folder / name, folder / f"{name}.gz"
    if plain.is_file() and (os.access(plain, os.R_OK) or not packed.is_file()):
        data = _read(plain)  # a cache we cannot read (another user's) falls back to the .gz
        if hashlib.md5(data).hexdigest() == FILES[name][0]:
            return data
        if not packed.is_file():
            return _verified(name, data, plain)  # raises with the precise reason
    if not packed.is_file():
        return None
    try:
        data = bytearray(gzip.decompress(_read(packed)))
    except (OSError, EOFError, zlib.error) as exc:
        raise UsageError(f"MNIST file {packed} is corrupt or truncated ({exc}); "
                         f"replace it with a good copy")
    _verified(name, data, packed)
    _write_cache(plain, data)
    return data


def _download(data_dir: Path) -> None:
    """torchvision's MNIST download, every network wait bounded by DOWNLOAD_TIMEOUT_S;
    SIGTERM and SIGINT end the process meanwhile (nothing has been trained yet)."""
    import torchvision  # only here: the default path never needs torchvision

    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with interruptible():
            for train in (True, False):
                torchvision.datasets.MNIST(root=str(data_dir), train=train, download=True)
    except Exception as exc:  # any network or disk failure becomes the same one-line advice
        first_line = (str(exc).strip().splitlines() or [""])[0].rstrip(":")
        raise UsageError(f"downloading MNIST into {raw_dir(data_dir)} failed "
                         f"({type(exc).__name__}: {first_line}); "
                         + _PLACE.format(raw=raw_dir(data_dir)))
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _parse(name: str, data: bytearray) -> torch.Tensor:
    # a view of the buffer read, not a copy: a copy of the 47 MB of training images cost a
    # trainer 0.01-0.4 s of page faults (numpy asks for huge pages, which the kernel may first
    # have to compact), in every process that loads MNIST
    offset = 16 if FILES[name][1] == 2051 else 8
    tensor = torch.frombuffer(data, dtype=torch.uint8, offset=offset)
    return tensor.view(-1, 28, 28) if offset == 16 else tensor


def _identity(folder: Path) -> tuple:
    """What tells one state of the files from another: any write, replacement, chmod or
    removal changes a file's inode, size, mode or ctime."""
    found = []
    for name in FILES:
        for path in (folder / name, folder / f"{name}.gz"):
            try:
                stat = path.stat()
            except OSError:
                continue
            found.append((path.name, stat.st_ino, stat.st_size, stat.st_mode, stat.st_ctime_ns))
    return (str(folder.resolve()), tuple(found))


# files parsed in this process, by identity: in-process runs (the tests, the benches) read
# and verify MNIST once, not once per run
_PARSED: dict[tuple, dict[str, torch.Tensor]] = {}


def load_raw(data_dir: str | Path, download: bool = False) -> dict[str, torch.Tensor]:
    """All four files as tensors, verified. Missing files: download if asked, else UsageError.
    The tensors are shared between calls on unchanged files: index them, never modify them."""
    folder = raw_dir(data_dir)
    if not Path(data_dir).is_dir():
        raise UsageError(f"data directory {data_dir} does not exist; " + _FIX.format(raw=folder))
    key = _identity(folder)
    if key not in _PARSED:
        _PARSED.clear()  # one state of the files is enough to keep
        tensors = _load(folder, data_dir, download)
        # the decompressed cache written by the first read changes the identity: key by after
        _PARSED[_identity(folder)] = tensors
        return tensors
    return _PARSED[key]


def _load(folder: Path, data_dir: str | Path, download: bool) -> dict[str, torch.Tensor]:
    contents = {name: read_file(data_dir, name) for name in FILES}
    missing = [name for name, data in contents.items() if data is None]
    if missing and download:
        _download(Path(data_dir))
        contents = {name: read_file(data_dir, name) for name in FILES}
        missing = [name for name, data in contents.items() if data is None]
    if missing:
        raise UsageError(f"MNIST file {missing[0]}.gz is missing from {folder}; "
                         + _FIX.format(raw=folder))
    tensors = {name: _parse(name, data) for name, data in contents.items()}
    return {name: (t.long() if "labels" in name else t) for name, t in tensors.items()}
