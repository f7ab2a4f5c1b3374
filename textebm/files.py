"""Files a run or a saved model keeps: written atomically, read without running code, with one-line errors naming
the file (JSON objects, state dicts that must fit a model); and the progress bar long operations show.

Every file the package writes goes through one writer, :func:`write_file` (or :func:`atomic_write` for
libraries that write to a path by name):

1. the destination must not be a symbolic link (:class:`UnsafePathError` otherwise: a planted link is refused,
   never followed) nor a directory; with ``root`` (a run directory) no directory between ``root`` and the file
   may be a link either;
2. the content goes to a temporary file created exclusively (``O_CREAT | O_EXCL``, a random name, mode 0600)
   in the destination's own directory, never to a predictable ``<name>.tmp``;
3. the temporary file is flushed and fsynced, renamed over the destination with ``os.replace`` (atomic: a
   reader sees the old file or the new one, a crash leaves no half-written file), and the directory is fsynced.

Files that are read are regular files only (:func:`read_regular`: a device such as ``/dev/zero``, a pipe or a
socket is refused before a byte is read) with a size limit, and JSON is read with a bound on its nesting depth.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable, Optional, Union

#: size limits of the small files the package reads (configs, vocabularies, reports, grammars, recipes)
MAX_JSON_BYTES = 256 << 20
#: nesting depth a JSON or YAML file the package reads may have (its own files nest a few levels)
MAX_DEPTH = 64


class FileFormatError(ValueError):
    """A file the package reads is malformed or does not fit what reads it; the message names the file."""


class _OneLineOSError(OSError):
    def __init__(self, msg: str, code: Optional[int] = None):
        super().__init__(" ".join(str(msg).split()))
        self.errno = code

    def __str__(self) -> str:
        return self.args[0]


class UnsafePathError(_OneLineOSError):
    """A path a command would write through (a symbolic link) or read from (a device, a pipe) is refused; the
    message names the path and what to do (one line)."""


class WriteError(_OneLineOSError):
    """A file could not be written (a full disk, a quota); nothing was replaced. ``errno`` is the cause's."""


# ---- reading ---------------------------------------------------------------------------------------------
def read_regular(path, what: str = "file", limit: Optional[int] = None) -> bytes:
    """The bytes of ``path``, which must be a regular file (links to one are fine) of at most ``limit`` bytes.

    A device (``/dev/zero``), a pipe or a socket is an :class:`UnsafePathError` raised before anything is read
    (the file is opened without blocking, then checked), a directory an ``IsADirectoryError``, a larger file a
    :class:`FileFormatError`; a missing file is a ``FileNotFoundError``. Messages name ``what`` and the path.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{what} {path} is a directory, expected a file") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(f"{what} {path} is a directory, expected a file")
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{what} {path} is not a regular file (a device, a pipe or a socket); "
                                  f"pass a file")
        if limit is not None and st.st_size > limit:
            raise FileFormatError(f"{what} {path} is {st.st_size} bytes, more than the {limit} bytes such a file "
                                  f"may have")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:  # it grew while being read
                raise FileFormatError(f"{what} {path} is more than the {limit} bytes such a file may have")
        return b"".join(chunks)
    finally:
        os.close(fd)


def check_depth(obj, what: str, max_depth: int = MAX_DEPTH) -> None:
    """A :class:`FileFormatError` when lists / mappings in ``obj`` nest deeper than ``max_depth`` (iterative:
    no recursion, whatever the depth)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list, tuple)):
            if depth > max_depth:
                raise FileFormatError(f"{what} nests more than {max_depth} levels deep")
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))


def loads_json(text: str, what: str, max_depth: int = MAX_DEPTH, **kw):
    """``json.loads(text)`` with one-line errors naming ``what``: invalid JSON and nesting deeper than
    ``max_depth`` (Python's parser would otherwise stop with a RecursionError) are :class:`FileFormatError`."""
    try:
        data = json.loads(text, **kw)
    except RecursionError:
        raise FileFormatError(f"{what} nests more than {max_depth} levels deep") from None
    except json.JSONDecodeError as e:
        raise FileFormatError(f"{what} is not valid JSON ({e})") from None
    check_depth(data, what, max_depth)
    return data


def read_json(path, limit: int = MAX_JSON_BYTES) -> dict:
    """A JSON object from ``path`` (a regular file of at most ``limit`` bytes, nested at most
    :data:`MAX_DEPTH` levels); errors name the file."""
    path = Path(path)
    raw = read_regular(path, "file", limit)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileFormatError(f"{path} is not valid JSON ({e})") from None
    data = loads_json(text, str(path))
    if not isinstance(data, dict):
        raise FileFormatError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def load_state(module, state, what: str) -> None:
    """``module.load_state_dict(state)`` with a one-line error naming ``what`` when the names, shapes or dtypes
    differ. ``load_state_dict`` would cast a tensor of another dtype silently (bool or integer weights into a
    float model give nonsense with no error); such a tensor is refused."""
    if not isinstance(state, dict):
        raise FileFormatError(f"{what}: the weights are not a mapping of names to tensors")
    own = module.state_dict()
    for name, value in state.items():
        mine = own.get(name)
        dtype = getattr(value, "dtype", None)
        if mine is not None and dtype is not None and dtype != mine.dtype:
            raise FileFormatError(f"{what}: {name} is stored as {str(dtype).replace('torch.', '')}, but the model "
                                  f"keeps it as {str(mine.dtype).replace('torch.', '')}; the file was not written "
                                  f"by this model (convert it, or save the model again)")
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise FileFormatError(f"{what} does not fit the model its recipe builds ({msg[:300]})") from None


# ---- writing ---------------------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_link(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def refuse_link(path, what: str = "") -> None:
    """:class:`UnsafePathError` if ``path`` itself is a symbolic link (which a write would follow)."""
    path = Path(path)
    if _is_link(path):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        raise UnsafePathError(f"{what + ' ' if what else ''}{path} is a symbolic link (to {target}); refusing to "
                              f"write through it: remove the link, or write somewhere else")


def make_dirs(directory, root=None) -> Path:
    """Create ``directory`` (and missing parents). With ``root``: every directory from ``root`` (exclusive) down
    to ``directory`` is created if missing and must be a real directory, not a link (:class:`UnsafePathError`),
    so that nothing written below ``root`` can land outside it."""
    directory = Path(directory)
    if root is None:
        directory.mkdir(parents=True, exist_ok=True)
        return directory
    root = Path(root)
    try:
        rel = directory.relative_to(root)
    except ValueError:
        raise ValueError(f"{directory} is not inside {root}") from None
    root.mkdir(parents=True, exist_ok=True)
    d = root
    for part in rel.parts:
        if part in ("", "."):
            continue
        if part == "..":
            raise UnsafePathError(f"{directory} leaves {root} ('..'); write inside it")
        d = d / part
        refuse_link(d)
        try:
            os.mkdir(d)
        except FileExistsError:
            pass
        st = os.lstat(d)
        if stat.S_ISLNK(st.st_mode):
            refuse_link(d)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(f"{d} is a file where a directory is expected")
    return directory


def fsync_dir(directory) -> None:
    """Make a rename or a removal inside ``directory`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


Content = Union[bytes, str, Callable]


def _write(path, content, root, by_path: bool) -> Path:
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        raise IsADirectoryError(f"{path} names a directory, expected a file")
    parent = path.parent
    make_dirs(parent, root)
    refuse_link(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=f".{path.name[:80]}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        try:
            if by_path:
                os.close(fd)
                fd = -1
                content(tmp)
                fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise UnsafePathError(f"the temporary file {tmp} was replaced while {path} was written")
                os.fsync(fd)
            else:
                with os.fdopen(fd, "wb") as fh:
                    fd = -1
                    if callable(content):
                        content(fh)
                    else:
                        fh.write(content.encode("utf-8") if isinstance(content, str) else content)
                    fh.flush()
                    os.fsync(fh.fileno())
        finally:
            if fd >= 0:
                os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())
        refuse_link(path)  # a link planted while the file was written is refused too (os.replace would not
        os.replace(tmp, path)  # follow it, but the caller asked for that path, not for the link's target)
    except OSError as e:
        if isinstance(e, UnsafePathError) or e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO):
            raise
        raise WriteError(f"could not write {path}: {os.strerror(e.errno)} (is the disk full?); nothing was "
                         f"replaced", e.errno) from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    fsync_dir(parent)
    return path


def write_file(path, content: Content, root=None) -> Path:
    """Write ``content`` to ``path`` safely (see the module docstring): ``bytes``, ``str`` (UTF-8) or a callable
    that writes into the binary file object it is given. Parent directories are created; with ``root`` (the run
    directory the file belongs to) none of them may be a link. Returns the path."""
    return _write(path, content, root, by_path=False)


def atomic_write(path, write: Callable[[Path], None], root=None) -> Path:
    """:func:`write_file` for writers that need a path (``write(tmp)`` writes the temporary file by name, e.g.
    safetensors or a plotting library): the same exclusive temporary file, checks, fsync and rename. The file
    gets the permissions a plain ``open`` would give it."""
    return _write(path, write, root, by_path=True)


def open_append(path, root=None):
    """A text file object appending to ``path`` (created if missing), opened without following a link
    (:class:`UnsafePathError` for a planted one) and only if it is a regular file."""
    path = Path(path)
    make_dirs(path.parent, root)
    refuse_link(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | os.O_NONBLOCK, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            refuse_link(path)
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePathError(f"{path} is not a regular file; refusing to append to it")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a", encoding="utf-8")
