"""Writing files so that nothing half-written is ever left behind, and one writer per folder.

    atomic_write(path, data)     write to a temporary file beside path, flush it to disk, then
                                 rename it over path: a reader sees the old file or the new one,
                                 never a mix; a failed write removes its temporary file
    exclusive_lock(path)         a context manager holding an advisory lock on path (a lock file),
                                 so that a second process writing the same output gets a clear
                                 error instead of silently interleaving with the first
    shared_lock(path)            the same lock taken shared: many holders at once, none while an
                                 exclusive holder has it (the sweep's workers share a folder so)
    lock_is_held(path)           whether another process holds path's lock (a probe, for status)
    remove_stale_temporaries     delete the temporary files that killed writers left beside path

The locks are flock(2) locks on a lock file, released by the kernel when their holder dies
(SIGKILL included). Across machines they need a file system that carries flock: Linux NFS
clients do (they emulate flock with whole-file POSIX locks, held by the server: NFSv4, or
NFSv3 with lockd); Lustre only mounted with ``-o flock``; a file system that cannot lock
gives an OSError naming the path instead of a lock that does not exclude (docs/robustness.md).

Temporary files are named ``<name>.<random>.tmp`` in the target's folder (a rename is atomic
only within one file system). A symlink at path is written through: the file it points to is
replaced, the link stays.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
from pathlib import Path

TEMP_SUFFIX = ".tmp"


class OutputLocked(OSError):
    """Another process is writing the same output."""


def resolve_target(path) -> Path:
    """The regular file a write to ``path`` should replace: symlinks followed; OSError if path
    names a directory or something that cannot hold a regular file (a device, a pipe)."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if target.exists():
        mode = target.stat().st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file (a device or a pipe?)", str(path))
    return target


def _fsync_dir(folder: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):  # make a rename durable (POSIX)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path, data, *, mode: int = 0o644) -> Path:
    """Write ``data`` (str or bytes, or a function f(file) that writes to a binary file) to
    ``path`` atomically; returns the path written. OSError (naming the path) on failure, with
    nothing left behind but the file as it was before."""
    target = resolve_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=TEMP_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes the file private (0600)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
    return target


def remove_stale_temporaries(path, *, older_than_s: float = 0.0) -> list[Path]:
    """Delete ``<name>.*.tmp`` files beside path that no live writer holds (older than
    ``older_than_s`` seconds); returns what was removed."""
    target = resolve_target(path)
    removed = []
    if not target.parent.is_dir():
        return removed
    now = time.time()
    for p in target.parent.glob(target.name + ".*" + TEMP_SUFFIX):
        try:
            if now - p.stat().st_mtime >= older_than_s:
                p.unlink()
                removed.append(p)
        except OSError:
            pass
    return removed


def _lock_path(path: Path) -> Path:
    return path / ".lock" if path.is_dir() else path.with_name(path.name + ".lock")


def _flock(fd: int, path: Path, shared: bool, what: str, timeout_s: float) -> None:
    """Take the lock on fd, retrying for up to timeout_s; OutputLocked if it stays busy."""
    import fcntl  # (here: Unix only, and only locking needs it)

    kind = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise OutputLocked(
                    errno.EBUSY, f"another minicount process is writing this {what}", str(path)
                ) from None
            time.sleep(0.05)
        except OSError as e:  # ENOLCK (NFS without lockd), EOPNOTSUPP/EINVAL/ENOSYS (no flock)
            raise OSError(
                e.errno,
                "this file system cannot lock files (flock), which minicount needs to keep "
                "processes apart",
                str(path),
            ) from None


@contextlib.contextmanager
def _locked(path, *, what: str, shared: bool, timeout_s: float):
    path = Path(path)
    lock = _lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _flock(fd, path, shared, what, timeout_s)
        yield lock
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def shared_lock(path, *, what: str = "output", timeout_s: float = 0.0):
    """exclusive_lock's lock taken shared: any number of shared holders at once; OutputLocked
    while an exclusive holder has it (after retrying for ``timeout_s`` seconds)."""
    return _locked(path, what=what, shared=True, timeout_s=timeout_s)


def lock_is_held(path) -> bool:
    """Whether a process holds ``path``'s lock (exclusive_lock's or shared_lock's, path as
    given to them) exclusively, probed by taking it shared for an instant (a holder that asks
    for it in that instant is told it is busy). False when there is no lock file."""
    import fcntl  # (here: Unix only, and only locking needs it)

    lock = _lock_path(Path(path))
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive_lock(path, *, what: str = "output", timeout_s: float = 0.0):
    """Hold an exclusive advisory lock on ``<path>.lock`` (path itself for a folder: its
    ``.lock`` file inside) while the block runs; OutputLocked at once (or after retrying for
    ``timeout_s`` seconds) if another process holds it. The lock file is left in place
    (removing it would race with a waiting writer)."""
    with _locked(path, what=what, shared=False, timeout_s=timeout_s) as lock:
        yield lock
