"""File helpers shared by every reader and writer of the package (one of each):

* ``open_regular(path, what)``: open a file for reading only if it is a regular file. The file
  is opened non-blocking and checked with ``fstat`` before a byte is read, so a FIFO, socket or
  device named like a data file is refused at once instead of blocking the reader forever.
* ``atomic_write(path, write)``: replace ``path`` with what ``write(fileobj)`` writes, through a
  temporary file in the same folder (fsync, ``os.replace``): on any failure the old file is
  left intact and no temporary file stays behind.
* ``check_output_file(path, what)``: before a long job, check that ``path`` can be written
  (its folder exists or can be made and takes a new file; the path itself is not a folder or a
  special file). Raises ``OSError``/``ValueError`` naming the path and the reason.
"""
import errno
import os
import stat
import tempfile

__all__ = ["open_regular", "atomic_write", "check_output_file", "check_output_folder"]


def _kind(mode):
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path, what="file"):
    """A binary file object for the regular file ``path``; ``ValueError`` (``IsADirectoryError``
    for a folder) naming the path when it is anything else, without blocking on a FIFO."""
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _kind(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, f"{what} is {kind}, expected a file", path)
            raise ValueError(f"{path}: {what} is {kind}, expected a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _umask():
    old = os.umask(0o022)
    os.umask(old)
    return old


def _target(path):
    """The file an ``open(path, 'wb')`` would write (symlinks followed) and a refusal for
    targets that a rename must not replace (folders, FIFOs, devices)."""
    real = os.path.realpath(os.fspath(path))
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return real, None
    except NotADirectoryError:
        raise NotADirectoryError(errno.ENOTDIR, "a folder in the path is a regular file",
                                 os.fspath(path)) from None
    if stat.S_ISREG(st.st_mode):
        return real, st
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder, expected a path for a file",
                                os.fspath(path))
    raise ValueError(f"{os.fspath(path)}: is {_kind(st.st_mode)}; expected a path for a "
                     f"regular file")


def atomic_write(path, write, mode="wb"):
    """Write ``path`` atomically: ``write(f)`` fills a temporary file in the same folder, which
    is flushed, fsync'ed and renamed over ``path``. The old file survives any failure (full disk,
    file-size limit, exception in ``write``); the temporary file is removed. ``write`` may also
    be the bytes (or str, written as UTF-8) to write."""
    if isinstance(write, (bytes, bytearray, memoryview, str)):
        data = write.encode("utf-8") if isinstance(write, str) else bytes(write)
        write, mode = (lambda f: f.write(data)), "wb"
    real, st = _target(path)
    folder = os.path.dirname(real) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(real) + ".",
                               suffix=".tmp")
    try:
        os.fchmod(fd, (st.st_mode & 0o7777) if st is not None else (0o666 & ~_umask()))
        with os.fdopen(fd, mode) as f:
            fd = None
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, real)
        tmp = None
        try:  # make the rename durable
            dfd = os.open(folder, os.O_RDONLY)
        except OSError:  # pragma: no cover - folders that cannot be opened
            return
        try:
            os.fsync(dfd)
        except OSError:  # pragma: no cover - file systems without directory fsync
            pass
        finally:
            os.close(dfd)
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def check_output_file(path, what="output file", make_folder=True):
    """Check before a long job that ``path`` can be written (see the module doc). Makes the
    folder when ``make_folder``; returns the path."""
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{what}: empty path")
    if path.endswith(os.sep) or os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{what} is a folder, expected a file path", path)
    _target(path)
    folder = os.path.dirname(os.path.abspath(path))
    check_output_folder(folder, what, make_folder)
    return path


def check_output_folder(folder, what="output folder", make_folder=True):
    """``folder`` exists (or is made) and takes a new file; raises ``OSError`` naming it."""
    folder = os.fspath(folder)
    if make_folder:
        try:
            os.makedirs(folder, exist_ok=True)
        except FileExistsError:
            raise NotADirectoryError(errno.ENOTDIR, f"{what}: not a folder", folder) from None
    if not os.path.isdir(folder):
        if os.path.exists(folder) or os.path.lexists(folder):
            raise NotADirectoryError(errno.ENOTDIR, f"{what}: not a folder", folder)
        raise FileNotFoundError(errno.ENOENT, f"{what}: no such folder", folder)
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".lviv_c-write-test-")
    except OSError as e:
        raise type(e)(e.errno, f"{what}: cannot create files there ({e.strerror})",
                      folder) from None
    os.close(fd)
    os.unlink(probe)
    return folder
