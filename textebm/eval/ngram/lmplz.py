"""Building, finding and running KenLM's ``lmplz``.

* :func:`install_lmplz` builds ``lmplz`` from the ``kenlm`` source
  distribution into the cache (:func:`lmplz_cache_path`);
* :func:`find_lmplz` locates a binary;
* :func:`train_lmplz` runs it with options that make it robust on small or
  degenerate corpora.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .corpus import PathLike, check_order, has_words, require_file

#: Debian packages needed to build ``lmplz``.
DEBIAN_BUILD_DEPS = (
    "build-essential",
    "cmake",
    "libboost-program-options-dev",
    "libboost-system-dev",
    "libboost-thread-dev",
    "libboost-test-dev",
    "zlib1g-dev",
    "libbz2-dev",
    "liblzma-dev",
)


class LmplzError(RuntimeError):
    """lmplz could not be built or failed to estimate a model."""


def default_cache_dir() -> Path:
    """Root of textebm's cache: ``$TEXTEBM_CACHE``, else
    ``$XDG_CACHE_HOME/textebm``, else ``~/.cache/textebm``."""
    env = os.environ.get("TEXTEBM_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "textebm"


def lmplz_cache_path(cache_dir: PathLike | None = None) -> Path:
    """Where :func:`install_lmplz` puts the binary (``<cache>/bin/lmplz``)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "bin" / "lmplz"


def _lmplz_runs(path: Path) -> bool:
    """True if ``path`` is an executable lmplz that starts (libraries load)."""
    if not path.is_file() or not os.access(path, os.X_OK):
        return False
    try:
        proc = subprocess.run(
            [str(path), "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    # ``lmplz --help`` prints its usage and exits with status 1.
    return b"Kneser-Ney" in proc.stdout or b"--order" in proc.stdout


def find_lmplz(explicit: PathLike | None = None) -> Path | None:
    """Locate lmplz.

    Order: ``explicit`` (must exist, else :class:`FileNotFoundError`), the
    ``TEXTEBM_LMPLZ`` environment variable, the cache path of
    :func:`install_lmplz`, then ``lmplz`` on ``PATH``.  Returns ``None`` when
    none is found.
    """
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"lmplz binary not found: {p}")
        return p
    env = os.environ.get("TEXTEBM_LMPLZ")
    if env:
        p = Path(env).expanduser()
        if p.is_file():
            return p
    cached = lmplz_cache_path()
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    on_path = shutil.which("lmplz")
    return Path(on_path) if on_path else None


def _missing_build_deps() -> list[str]:
    """Names of missing build prerequisites (tools and headers)."""
    missing = []
    for tool in ("cmake", "make"):
        if shutil.which(tool) is None:
            missing.append(tool)
    if shutil.which("c++") is None and shutil.which("g++") is None:
        missing.append("a C++ compiler")
    include_dirs = [Path("/usr/include"), Path("/usr/local/include")]
    for extra in (os.environ.get("CPATH", ""), os.environ.get("CPLUS_INCLUDE_PATH", "")):
        include_dirs.extend(Path(d) for d in extra.split(os.pathsep) if d)
    for header, what in (
        ("boost/program_options.hpp", "Boost.ProgramOptions headers"),
        ("boost/thread.hpp", "Boost.Thread headers"),
        ("zlib.h", "zlib headers"),
    ):
        if not any((d / header).is_file() for d in include_dirs):
            missing.append(what)
    return missing


def _deps_error(detail: str) -> LmplzError:
    pkgs = " ".join(DEBIAN_BUILD_DEPS)
    return LmplzError(
        f"cannot build lmplz: {detail}. Install the build dependencies first, "
        f"e.g. on Debian/Ubuntu: apt-get install -y {pkgs}"
    )


def _run_logged(cmd: list[str], cwd: Path, log: Path, what: str) -> None:
    with open(log, "ab") as fh:
        fh.write(("$ " + " ".join(cmd) + "\n").encode())
        fh.flush()
        proc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        if what == "configure" and ("Boost" in tail or "ZLIB" in tail):
            raise _deps_error("cmake could not find Boost or zlib\n" + tail)
        raise LmplzError(f"lmplz {what} step failed ({' '.join(cmd)}):\n{tail}")


def _download_kenlm_sdist(dest: Path, log: Path) -> Path:
    """Fetch the kenlm source distribution with pip into ``dest``."""
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "kenlm",
            "-d", str(dest), "kenlm"]
    # Without build isolation pip only needs setuptools (present in most
    # environments) to read the metadata; the isolated retry fetches build
    # requirements as wheels.
    attempts = [base[:5] + ["--no-build-isolation"] + base[5:], base]
    for cmd in attempts:
        with open(log, "ab") as fh:
            fh.write(("$ " + " ".join(cmd) + "\n").encode())
            fh.flush()
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
        found = sorted(dest.glob("kenlm-*.tar.gz")) + sorted(dest.glob("kenlm-*.zip"))
        if found:
            return found[0]
        if proc.returncode == 0:
            break
    tail = log.read_text(errors="replace")[-2000:]
    raise LmplzError(f"could not download the kenlm source distribution with pip:\n{tail}")


def _extract(archive: Path, dest: Path) -> Path:
    if archive.name.endswith(".zip"):
        shutil.unpack_archive(str(archive), str(dest))
    else:
        with tarfile.open(archive) as tf:
            try:
                tf.extractall(dest, filter="data")
            except TypeError:  # Python without extraction filters
                tf.extractall(dest)
    roots = [p for p in dest.iterdir() if p.is_dir() and (p / "CMakeLists.txt").is_file()]
    if not roots:
        raise LmplzError(f"no CMakeLists.txt found in {archive.name}")
    return roots[0]


def install_lmplz(cache_dir: PathLike | None = None, force: bool = False, jobs: int = 2) -> Path:
    """Build KenLM's ``lmplz`` from the ``kenlm`` sdist and cache it.

    The binary goes to ``<cache>/bin/lmplz`` where ``<cache>`` is
    ``cache_dir`` or :func:`default_cache_dir` (``$TEXTEBM_CACHE``,
    ``$XDG_CACHE_HOME/textebm``, ``~/.cache/textebm``).  Returns at once when
    a working binary is already there (unless ``force``).  Needs cmake, a C++
    compiler, Boost (program_options, system, thread, test) and zlib; when
    they are missing a :class:`LmplzError` names the Debian packages.  The
    build takes a few minutes on two cores.
    """
    target = lmplz_cache_path(cache_dir)
    if not force and _lmplz_runs(target):
        print(f"lmplz already installed: {target}")
        return target
    missing = _missing_build_deps()
    if missing:
        raise _deps_error("missing " + ", ".join(missing))
    target.parent.mkdir(parents=True, exist_ok=True)
    print("building lmplz from the kenlm source distribution (takes a few minutes)...",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="textebm-lmplz-") as tmp:
        tmp_path = Path(tmp)
        log = tmp_path / "build.log"
        log.touch()
        archive = _download_kenlm_sdist(tmp_path / "sdist", log)
        src = _extract(archive, tmp_path / "src")
        build = tmp_path / "build"
        build.mkdir()
        _run_logged(
            ["cmake", str(src), "-DCMAKE_BUILD_TYPE=Release", "-DCOMPILE_TESTS=OFF",
             "-DENABLE_PYTHON=OFF", "-DENABLE_INTERPOLATE=OFF", "-DFORCE_STATIC=OFF",
             "-DBUILD_TESTING=OFF"],
            build, log, "configure",
        )
        _run_logged(["make", f"-j{max(1, int(jobs))}", "lmplz"], build, log, "build")
        built = build / "bin" / "lmplz"
        if not built.is_file():
            raise LmplzError(f"build finished but {built} is missing")
        staged = target.with_name(f".lmplz.{os.getpid()}.tmp")
        shutil.copy2(built, staged)
        os.chmod(staged, 0o755)
        os.replace(staged, target)
    if not _lmplz_runs(target):
        raise LmplzError(f"built lmplz at {target} does not run")
    print(f"lmplz installed: {target}")
    return target


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _auto_memory(text_bytes: int, order: int) -> str:
    """lmplz ``-S``: enough for the corpus in memory, at most 20% of RAM.

    lmplz allocates and touches all of ``-S`` up front, so the default 80%
    (or a flat 20%) costs seconds on small corpora.
    """
    want = max(64 << 20, text_bytes * 12 * max(order, 1))
    phys = _physical_memory()
    if phys:
        want = min(want, phys // 5)
    return f"{max(want >> 20, 16)}M"


def train_lmplz(order: int, text_path: PathLike, arpa_path: PathLike,
                lmplz: PathLike | None = None, memory: str | None = None,
                temp_dir: PathLike | None = None) -> Path:
    """Run lmplz: ``-o order --discount_fallback --skip_symbols -S mem -T tmp``.

    ``memory`` is lmplz's ``-S`` (e.g. ``"20%"`` or ``"1G"``); by default
    it is sized from the corpus and capped at 20% of RAM.  Raises
    :class:`LmplzError` with lmplz's stderr when it fails, and
    :class:`FileNotFoundError` when lmplz or the text is missing.
    """
    order = check_order(order)
    text_path = require_file(text_path, "training text")
    exe = find_lmplz(lmplz)
    if exe is None:
        raise FileNotFoundError(
            "lmplz not found (set TEXTEBM_LMPLZ, pass its path, or run install_lmplz())")
    size = text_path.stat().st_size
    if size == 0 or not has_words(text_path.read_bytes()):
        raise ValueError(f"training corpus is empty (no words): {text_path}")
    from ...files import atomic_write

    arpa_path = Path(arpa_path)
    with tempfile.TemporaryDirectory(prefix="textebm-lmplz-", dir=temp_dir) as tmp:
        src = text_path
        with open(text_path, "rb") as fh:
            fh.seek(size - 1)
            unterminated = fh.read(1) != b"\n"
        if unterminated:  # lmplz would drop the last sentence's </s>
            src = Path(tmp) / "text.txt"
            shutil.copyfile(text_path, src)
            with open(src, "ab") as fh:
                fh.write(b"\n")
        def run_lmplz(out: Path) -> None:  # into the writer's exclusive temporary file beside arpa_path
            cmd = [str(exe), "-o", str(order), "--discount_fallback", "--skip_symbols",
                   "-S", memory or _auto_memory(size, order), "-T", str(Path(tmp) / "lmplz_"),
                   "--text", str(src), "--arpa", str(out)]
            try:
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            except OSError as exc:
                raise LmplzError(f"could not run {exe}: {exc}") from exc
            if proc.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
                err = proc.stderr.decode(errors="replace").strip()
                raise LmplzError(f"lmplz failed (exit {proc.returncode}) on {text_path}:\n{err[-4000:]}")

        atomic_write(arpa_path, run_lmplz)
    return arpa_path
