"""bench/gpu_check.sh on a machine without a GPU: it keeps its deadline when a step hangs, every flag it passes
exists in the command it calls, and its summary reads the benchmark files right."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "bench"))
import gpu_summary  # noqa: E402

MODES = ("eager", "captured", "bf16")
STEPS = (["tests"] + [f"iter-ptb-{m}" for m in MODES] + ["quickstart", "sample", "eval"]
         + [f"iter-{p}-{m}" for p in ("snli", "yahoo") for m in MODES] + ["generation"])


def _commands():
    """(target, flags) of every command the script runs through $PY: target is a bench script or a textebm verb."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if not line.lstrip().startswith(("step ", "for ")) or "$PY" not in line:
            continue
        words = shlex.split(line.split("$PY", 1)[1].split(";")[0].replace('"', ""), posix=True)
        if words[:2] == ["-m", "textebm"]:
            target, rest = ["-m", "textebm", words[2]], words[3:]
        elif words[:2] == ["-m", "pytest"]:
            continue
        else:
            target, rest = [words[0]], words[1:]
        out.append((target, sorted({w for w in rest if re.match(r"^--?[a-z]", w)})))
    return out


def test_every_flag_the_check_passes_exists_in_the_command_it_calls():
    cmds = _commands()
    targets = {" ".join(t) for t, _ in cmds}
    assert {"-m textebm train", "-m textebm sample", "-m textebm eval", "bench/train_iteration.py",
            "bench/generation.py"} <= targets
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    helps = {}
    for target, flags in cmds:
        key = " ".join(target)
        if key not in helps:
            helps[key] = subprocess.run([sys.executable, *target, "--help"], cwd=ROOT, env=env, capture_output=True,
                                        text=True, timeout=120).stdout
        missing = [f for f in flags if not re.search(rf"(^|[\s,\[]){re.escape(f)}\b", helps[key])]
        assert not missing, f"{key} has no {missing}"


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_the_check_keeps_its_deadline_when_a_step_hangs(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(f"""#!/usr/bin/env bash
case "$*" in *gpu_summary.py*) exec {shlex.quote(sys.executable)} "$@";; esac
if [ "$1" = "-" ]; then cat > /dev/null; echo '{{"gpu": null}}'; exit 0; fi
exec sleep 60
""")
    fake.chmod(0o755)
    out = tmp_path / "out"
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHON=str(fake), OUT=str(out), DEADLINE="6"))
    wall = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert wall < 20, f"the check took {wall:.1f} s with a 6 s deadline"
    steps = [line.split() for line in (out / "steps.txt").read_text().splitlines()]
    assert [s[0] for s in steps] == STEPS + ["total_seconds"]
    assert steps[0][1] == "124" and all(s[1] == "skipped" for s in steps[1:-1])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total_seconds"] <= 6 + 5 + 1
    assert "tests timed out" in (out / "summary.md").read_text()


def test_the_summary_reads_the_benchmark_files(tmp_path):
    (tmp_path / "steps.txt").write_text("tests 0\niter-ptb-eager 0\niter-ptb-captured 1\ntotal_seconds 200\n")
    (tmp_path / "env.json").write_text(json.dumps({"gpu": "G", "torch": "t", "cuda": "c", "cudnn": 1}))
    it = {"seconds_per_iteration": {"textebm": 0.02, "reference": 0.25},
          "seconds_per_posterior_sampling": {"textebm": 0.01, "reference": 0.2},
          "seconds_per_prior_sampling": {"textebm": 0.001, "reference": 0.01},
          "speedup_iteration": 12.5, "speedup_posterior": 20.0,
          "launches_per_posterior_step": {"textebm": 1.0, "reference": 40.0}}
    (tmp_path / "iter-ptb-eager.json").write_text(json.dumps(it))
    (tmp_path / "quickstart-eval.json").write_text(json.dumps({"nll": {"nll_per_sentence": 33.0},
                                                               "latent": {"mi": 3.0, "active_units": 16}}))
    assert gpu_summary.main([str(tmp_path)]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["total_seconds"] == 200 and "total_seconds" not in s["steps"]
    assert s["train_iteration"]["ptb-eager"]["speedup_iteration"] == 12.5
    assert s["quickstart"]["mi"] == 3.0
    md = (tmp_path / "summary.md").read_text()
    assert "| ptb-eager | 20.0 | 250.0 | 12.5 | 10.0 | 200.0 | 1.0 / 40.0 |" in md
    assert "tests ok" in md and "iter-ptb-captured failed (1)" in md
    assert "12.5x bench/reference.py" in md and "the floor is 10x: met" in md
