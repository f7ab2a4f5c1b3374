"""Run directories as places on disk: who may write one (a lock), what ``--overwrite`` does to the run it replaces
(set aside, put back, recovered after a kill), and which paths a command may not write over or write into.

**The lock.** ``textebm train`` (new, ``--overwrite``, ``--resume``) holds ``fcntl.flock`` on ``RUN/.lock`` for
its whole life (:class:`RunLock`): a second command that would write the same run fails at once with one line
naming the first one's process id.

**--overwrite.** The directory's contents are not deleted when a new run starts there. They are moved into
``RUN/.replaced-<pid>`` (:func:`set_aside`) and stay there until the new run has trained at least one step and
saved a checkpoint (:meth:`Replacement.commit`, which renames the folder to ``.discard-<pid>`` before removing it).
An earlier exit, an exception, SIGINT or SIGTERM puts them back (:meth:`Replacement.put_back`). After a SIGKILL
(or a power cut) the folder is still there: the next command that touches the directory (``train``, ``sample``,
``eval``, ``chain``, ``plot``, ``compare``) finds it and puts it back (:func:`recover`), or, when it cannot (the
directory is read-only, another command holds the lock), prints the command that does:
``textebm train --restore RUN``. Every stage leaves a folder whose name says how to finish or undo it
(``.aside-<pid>`` while moving out, ``.replaced-<pid>`` while the new run starts, ``.restoring-<pid>`` while moving
back, ``.discard-<pid>`` once the new run has committed), so a kill at any moment loses nothing.

**Names and inputs.** A directory that holds the command's own inputs (recipe, corpus) is refused as a run
directory (:func:`check_not_inputs`), and a run's own files may not be symbolic links (:func:`check_run_links`):
a planted link is refused, never followed.
"""
from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
import signal
import stat
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

from .files import UnsafePathError, fsync_dir, refuse_link
from .console import log as _log

LOCK_FILE = ".lock"
#: stages of a replaced run, in order; the folder ``.<stage>-<pid>`` holds its files
STAGES = ("aside", "replaced", "restoring", "discard")
_STAGE_RE = re.compile(r"^\.(aside|replaced|restoring|discard)-(\d+)$")
#: names inside a run directory that belong to this module, not to the run
INTERNAL = (LOCK_FILE,)
#: what a run directory holds that must be the run's own (not links), beside every file under checkpoints/
LINK_FREE = ("config.json", "model.safetensors", "recipe.yaml", "vocab.json", "spm.model", "spm.json",
             "metrics.jsonl", "checkpoints", "tensorboard", "plots", LOCK_FILE)


class RunDirError(OSError):
    """A run directory cannot be used as asked (locked, holding the command's inputs, a planted link, a replaced
    run that cannot be put back); one line that says what to do."""

    def __init__(self, msg: str):
        super().__init__(" ".join(str(msg).split()))

    def __str__(self) -> str:
        return self.args[0]


def is_internal(name: str) -> bool:
    """True for the lock file and the folders of a replaced run (:data:`STAGES`)."""
    return name in INTERNAL or _STAGE_RE.match(name) is not None


def restore_command(run_dir) -> str:
    return f"textebm train --restore {shlex.quote(str(run_dir))}"


# ---- the lock -----------------------------------------------------------------------------------------------
class RunLock:
    """``flock`` on ``RUN/.lock``: exclusive for a command that writes the run. ``acquire`` raises
    :class:`RunDirError` at once (never waits) when another process holds it, naming that process. The lock file
    exists only while it is held: ``release`` removes it (a lock taken on a file that was removed meanwhile is
    detected and refused, so removing it is safe)."""

    def __init__(self, run_dir, what: str = "textebm train"):
        self.run_dir, self.what, self.fd = Path(run_dir), what, None

    def acquire(self, create_dir: bool = True) -> "RunLock":
        import fcntl

        path = self.run_dir / LOCK_FILE
        if create_dir:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        elif not self.run_dir.is_dir():
            raise RunDirError(f"no such run directory: {self.run_dir}")
        refuse_link(path, "the lock file")
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            st, now = os.fstat(fd), os.stat(path, follow_symlinks=False)
            if (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino):  # its holder removed it as we opened it
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirError(f"{self.run_dir} is in use by another textebm command ({holder}); wait for it to "
                              f"finish, or choose another directory") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}: {self.what}\n".encode())
        except OSError:
            pass
        self.fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and unlock."""
        if self.fd is None:
            return
        try:
            st, now = os.fstat(self.fd), os.stat(self.run_dir / LOCK_FILE, follow_symlinks=False)
            if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                os.unlink(self.run_dir / LOCK_FILE)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self if self.fd is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "process unknown"


def try_lock(run_dir, what: str) -> Optional[RunLock]:
    """The exclusive lock if it is free and can be taken (None when another process holds it, or the directory
    cannot hold a lock file: read-only, not ours)."""
    try:
        return RunLock(run_dir, what).acquire(create_dir=False)
    except RunDirError:
        return None
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR) or \
                isinstance(e, UnsafePathError):
            return None
        raise


# ---- replaced runs ------------------------------------------------------------------------------------------
def pending(run_dir) -> List[Tuple[str, int, Path]]:
    """(stage, pid, folder) of every replaced run inside ``run_dir`` (:data:`STAGES`)."""
    d = Path(run_dir)
    out = []
    try:
        names = os.listdir(d)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
    for name in sorted(names):
        m = _STAGE_RE.match(name)
        if m and stat.S_ISDIR(os.lstat(d / name).st_mode):
            out.append((m.group(1), int(m.group(2)), d / name))
    return out


def _remove(path: Path) -> None:
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _run_entries(run_dir: Path) -> List[Path]:
    """What the run itself consists of: everything but the lock and the replaced-run folders."""
    return [run_dir / n for n in sorted(os.listdir(run_dir)) if not is_internal(n)]


def _move_back(folder: Path, run_dir: Path) -> None:
    for child in sorted(folder.iterdir()):
        os.replace(child, run_dir / child.name)
    fsync_dir(run_dir)
    folder.rmdir()
    fsync_dir(run_dir)


class Replacement:
    """The contents of a run directory that ``--overwrite`` replaces, kept inside it until the new run commits."""

    def __init__(self, run_dir, folder: Path):
        self.run_dir, self.folder, self.done = Path(run_dir), Path(folder), False
        _ACTIVE[self.run_dir.resolve()] = self

    def commit(self) -> None:
        """The new run has trained and saved: the replaced contents go (renamed first, so that a kill while
        they are being removed cannot make them look like a run to put back)."""
        if self.done:
            return
        self.done = True
        _ACTIVE.pop(self.run_dir.resolve(), None)
        discard = self.run_dir / f".discard-{self.folder.name.rsplit('-', 1)[1]}"
        os.replace(self.folder, discard)
        fsync_dir(self.run_dir)
        shutil.rmtree(discard, ignore_errors=True)
        self.folder = discard

    def put_back(self) -> None:
        """Remove what the new run wrote and move the replaced contents back (see :func:`_finish`); once."""
        if self.done:
            return
        _finish("replaced", self.folder, self.run_dir)
        self.done = True
        _ACTIVE.pop(self.run_dir.resolve(), None)


def set_aside(run_dir) -> Replacement:
    """Move everything in ``run_dir`` (but the lock) into ``.replaced-<pid>`` inside it (``--overwrite``)."""
    run_dir = Path(run_dir)
    pid = os.getpid()
    moving = run_dir / f".aside-{pid}"
    moving.mkdir()
    fsync_dir(run_dir)
    for child in _run_entries(run_dir):
        os.replace(child, moving / child.name)
    fsync_dir(moving)
    folder = run_dir / f".replaced-{pid}"
    os.replace(moving, folder)
    fsync_dir(run_dir)
    return Replacement(run_dir, folder)


def _finish(stage: str, folder: Path, run_dir: Path) -> None:
    """Take a replaced run from ``stage`` to its end: ``aside`` (interrupted while moving out: the directory
    holds only old files) and ``restoring`` move the folder's files back; ``replaced`` first removes what the
    new run wrote, then restores; ``discard`` (the new run had committed) removes the folder."""
    if stage == "discard":
        shutil.rmtree(folder, ignore_errors=True)
        fsync_dir(run_dir)
        return
    if stage == "replaced":
        for child in _run_entries(run_dir):
            _remove(child)
        fsync_dir(run_dir)
        restoring = run_dir / f".restoring-{folder.name.rsplit('-', 1)[1]}"
        os.replace(folder, restoring)
        fsync_dir(run_dir)
        folder = restoring
    _move_back(folder, run_dir)


def recover(run_dir, quiet: bool = False) -> List[str]:
    """Finish every replaced run found in ``run_dir``; the caller holds the lock. Returns what was done."""
    done = []
    for stage, pid, folder in pending(run_dir):
        if stage in ("aside", "replaced", "restoring") and pid == os.getpid():
            continue  # this process's own, in progress
        _finish(stage, folder, Path(run_dir))
        if stage != "discard":
            done.append(f"{run_dir}: put back the run that an interrupted `textebm train --overwrite` (pid {pid}) "
                        f"had set aside in {folder.name}")
    if not quiet:
        for line in done:
            _log(line)
    return done


def check_recovered(run_dir, what: str = "textebm") -> None:
    """For a command about to read ``run_dir``: put back a run that an interrupted ``--overwrite`` left set
    aside, when the lock is free and the directory writable; otherwise say what is going on (a training run
    that is replacing it, or the command that restores it). Cheap when there is nothing to do."""
    run_dir = Path(run_dir)
    left = [p for p in pending(run_dir) if p[1] != os.getpid()]
    if not left:
        return
    lock = try_lock(run_dir, what)
    if lock is None:
        holder = ""
        try:
            with open(run_dir / LOCK_FILE, "rb") as fh:
                holder = fh.read(200).decode("utf-8", "replace").strip()
        except OSError:
            pass
        stage, pid, folder = left[0]
        if holder and _alive(pid):
            _log(f"warning: {run_dir} is being replaced by a running `textebm train --overwrite` ({holder}); "
                 f"its previous contents are in {folder} until the new run saves its first checkpoint")
        else:
            _log(f"warning: {folder} holds the run that an interrupted `textebm train --overwrite` set aside; "
                 f"put it back with: {restore_command(run_dir)}")
        return
    try:
        recover(run_dir)
    except OSError as e:
        _log(f"warning: could not put back the run set aside in {run_dir} ({e}); put it back with: "
             f"{restore_command(run_dir)}")
    finally:
        lock.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def restore(run_dir) -> List[str]:
    """``textebm train --restore RUN``: put back what an interrupted ``--overwrite`` set aside in ``run_dir``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"no such directory: {run_dir}")
    with RunLock(run_dir, "textebm train --restore").acquire(create_dir=False):
        done = recover(run_dir, quiet=True)
    return done


# ---- what a command may write where -------------------------------------------------------------------------
def check_run_links(run_dir) -> None:
    """:class:`UnsafePathError` when a file or folder of the run (:data:`LINK_FREE`, anything under
    ``checkpoints/``) is a symbolic link: a command would write through it into another place."""
    run_dir = Path(run_dir)
    for name in LINK_FREE:
        refuse_link(run_dir / name, "in the run,")
    ck = run_dir / "checkpoints"
    if ck.is_dir():
        for child in sorted(os.listdir(ck)):
            refuse_link(ck / child, "in the run,")


def _within(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def check_not_inputs(run_dir, inputs: Iterable, flag: str = "--out") -> None:
    """A :class:`RunDirError` when ``run_dir`` is, or holds, one of the command's inputs (recipe files, the
    corpus): replacing the directory would delete them. Links are resolved first."""
    out = Path(run_dir).expanduser().resolve()
    for src in inputs:
        if src is None or str(src) == "":
            continue
        p = Path(src).expanduser()
        if not p.exists():
            continue
        if _within(p.resolve(), out):
            raise RunDirError(f"{flag} {run_dir} holds this command's input {src}; replacing it would delete the "
                              f"input: choose another {flag}")


# ---- replacements in progress in this process ----------------------------------------------------------------
_ACTIVE = {}  # resolved run directory -> the Replacement this process has not committed or put back yet


def active(run_dir) -> Optional["Replacement"]:
    """The replacement this process holds in ``run_dir`` (None once committed or put back)."""
    return _ACTIVE.get(Path(run_dir).resolve())


class Interrupted(KeyboardInterrupt):
    """SIGTERM while a run sets up or saves: unwinds like Ctrl-C, so that a replaced run is put back."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
