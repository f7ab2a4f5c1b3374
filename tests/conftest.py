import os

# Nothing in the test suite may touch the network: datasets / huggingface_hub read these at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The test models are tiny: one thread avoids oversubscribing the two cores (subprocesses inherit this).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Every test module starts with one torch thread (a test that raises it cannot slow the next module)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead on 2 cores
    yield
    torch.set_num_threads(n)


def run_cli(*args, timeout=300):
    """``python -m textebm ARGS`` from the repository root, captured."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "textebm", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


def assert_one_line_error(proc, *words):
    """A user error: exit status 2, no traceback, one line on stderr containing every word."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]

SUBJ = ["the dog", "a cat", "the man", "a woman", "the bird", "my friend"]
VERB = ["sees", "likes", "eats", "finds", "wants"]
OBJ = ["the ball", "a fish", "the house", "a tree", "the car", "some bread"]


def write_toy_corpus(directory: Path, n_train=600, n_valid=64, n_test=64, seed=0) -> Path:
    """A small three-slot language written by the tests (subject verb object .)."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        lines = [f"{rng.choice(SUBJ)} {rng.choice(VERB)} {rng.choice(OBJ)} ." for _ in range(n)]
        (directory / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture(scope="session")
def toy_corpus(tmp_path_factory) -> Path:
    return write_toy_corpus(tmp_path_factory.mktemp("toy"))


TINY = [
    "model.latent_dim=4", "model.embed_dim=16", "model.hidden_dim=32", "model.dropout_in=0.0",
    "model.dropout_out=0.0", "prior.hidden=16", "sampling.prior_steps=10", "sampling.posterior_steps=5",
    "train.batch_size=32", "train.log_every=1", "train.eval_every=1000", "train.save_every=1000",
    "generate.max_len=12",
]


def tiny_recipe(corpus_dir, *extra):
    from textebm.config import Recipe, apply_overrides

    return apply_overrides(Recipe(name="tiny"), [f"data.corpus={corpus_dir}", "train.steps=10", *TINY, *extra])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, toy_corpus) -> Path:
    """A trained (briefly) run directory shared by the tests that only read it."""
    from textebm.train import train

    run = tmp_path_factory.mktemp("run") / "tiny"
    train(tiny_recipe(toy_corpus, "train.steps=20"), run, device="cpu", progress=False)
    return run


#: overrides that make a tiny run cheap to train: one validation batch, no latent diagnostics
FAST = ["train.latent_batches=0", "train.eval_batches=1"]


@pytest.fixture(scope="session")
def symbol_run(tmp_path_factory, toy_corpus) -> Path:
    """A briefly trained run with a symbol-vector prior of 3 symbols (for the commands that need symbols)."""
    from textebm.train import train

    run = tmp_path_factory.mktemp("run") / "symbols"
    train(tiny_recipe(toy_corpus, "train.steps=6", "prior.kind=symbol_vector", "prior.n_symbols=3",
                      "prior.objective_args={symbol_information: 1.0}", "train.prior_fit_samples=0", *FAST),
          run, device="cpu", progress=False)
    return run


@pytest.fixture
def recipe_file(tmp_path, toy_corpus) -> Path:
    """A tiny, cheap recipe (4 steps, a checkpoint every 2) written to a YAML file."""
    from textebm.config import dump_recipe

    path = tmp_path / "tiny.yaml"
    path.write_text(dump_recipe(tiny_recipe(toy_corpus, "train.steps=4", "train.save_every=2", *FAST)))
    return path


def run_main(capsys, *argv):
    """``textebm ARGV`` in this process: (exit status, stdout, non-empty stderr lines)."""
    from textebm.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse errors
        code = e.code
    cap = capsys.readouterr()
    return code, cap.out, [line for line in cap.err.splitlines() if line.strip()]


def one_line_error(code, err, *words) -> str:
    """Exit status 2 and a last stderr line ``textebm...: error: ...`` naming every word, no traceback."""
    assert code == 2, err
    assert not any("Traceback" in line for line in err), err
    assert err and ": error: " in err[-1] and err[-1].startswith("textebm"), err
    for w in words:
        assert w in err[-1], err[-1]
    return err[-1]


def tree(directory: Path) -> dict:
    """Every file and link under ``directory`` (not following links): path -> bytes or ('link', target)."""
    import os

    out = {}
    for top, dirs, files in os.walk(directory):  # links to directories are listed, not entered
        for name in dirs + files:
            p = Path(top) / name
            rel = str(p.relative_to(directory))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_file():
                out[rel] = p.read_bytes()
    return dict(sorted(out.items()))
