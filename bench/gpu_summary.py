"""Summarize a bench/gpu_check.sh output folder as summary.json and summary.md (printed too).

    python bench/gpu_summary.py bench/gpu-out
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summarize(out: Path) -> dict:
    steps = {}
    for line in (out / "steps.txt").read_text().splitlines():
        name, _, code = line.partition(" ")
        steps[name] = int(code) if code.lstrip("-").isdigit() else code
    iters = {}
    for f in sorted(out.glob("iter-*.json")):
        r = _load(f)
        if r:
            iters[f.stem[len("iter-"):]] = {
                "iteration_s": r["seconds_per_iteration"], "posterior_s": r["seconds_per_posterior_sampling"],
                "prior_s": r["seconds_per_prior_sampling"], "speedup_iteration": r["speedup_iteration"],
                "speedup_posterior": r["speedup_posterior"], "launches_per_step": r.get("launches_per_posterior_step"),
                "graphs": r.get("graphs"), "peak_memory_mb": r.get("peak_memory_mb")}
    total = steps.pop("total_seconds", None)
    ev = _load(out / "quickstart-eval.json") or {}
    lat = ev.get("latent") or {}
    return {"env": _load(out / "env.json"), "steps": steps, "total_seconds": total, "train_iteration": iters,
            "generation": _load(out / "generation.json"),
            "quickstart": {"nll": (ev.get("nll") or {}).get("nll_per_sentence"), "mi": lat.get("mi"),
                           "active_units": lat.get("active_units"), "shuffle_gap": lat.get("shuffle_gap")}}


def _verdict(code) -> str:
    """A step's exit status in words (timeout's 124 and 137 are the step's limit or the check's deadline)."""
    if code == 0:
        return "ok"
    if code in (124, 137):
        return "timed out"
    return code if isinstance(code, str) else f"failed ({code})"


def markdown(s: dict) -> str:
    env = s.get("env") or {}
    lines = [f"GPU check on {env.get('gpu')} (torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN "
             f"{env.get('cudnn')}), {s.get('total_seconds')} s; steps: "
             + ", ".join(f"{k} {_verdict(v)}" for k, v in s["steps"].items()),
             "", "| preset / mode | iteration textebm (ms) | reference (ms) | x | posterior textebm (ms) | "
             "reference (ms) | launches per Langevin step textebm / reference |", "|---|---|---|---|---|---|---|"]
    for name, r in s["train_iteration"].items():
        it, po, la = r["iteration_s"], r["posterior_s"], r.get("launches_per_step") or {}
        lines.append(f"| {name} | {1e3 * it['textebm']:.1f} | {1e3 * it['reference']:.1f} | "
                     f"{r['speedup_iteration']:.1f} | {1e3 * po['textebm']:.1f} | {1e3 * po['reference']:.1f} | "
                     + (f"{la.get('textebm', 0):.1f} / {la.get('reference', 0):.1f}" if la else "n/a") + " |")
    ptb = [r["speedup_iteration"] for name, r in s["train_iteration"].items() if name.startswith("ptb-")]
    if ptb:
        lines += ["", f"PTB training iteration: {max(ptb):.1f}x bench/reference.py on the same GPU (best mode; "
                      f"the floor is 10x: {'met' if max(ptb) >= 10 else 'not met'})"]
    q = s["quickstart"]
    lines += ["", f"quickstart, 200 steps on cuda: NLL {q['nll']}, MI {q['mi']}, active units {q['active_units']}, "
                  f"shuffled-latent gap {q['shuffle_gap']}"]
    g = s.get("generation")
    if g:
        lines.append(f"generation: {g['sentences_per_second_batched']:.0f} sentences/s batched "
                     f"({g['speedup']:.1f}x one at a time)")
    return "\n".join(lines)


def main(argv=None) -> int:
    out = Path((argv or sys.argv[1:])[0])
    s = summarize(out)
    (out / "summary.json").write_text(json.dumps(s, indent=2) + "\n")
    md = markdown(s)
    (out / "summary.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
