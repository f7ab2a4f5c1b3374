"""What training prints: one line per validation and the summary at the end (numbers from ``metrics.jsonl``)."""
from __future__ import annotations

from typing import List, Optional


def _num(v: Optional[float], digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def validation_line(ev: dict) -> str:
    """One line of validation numbers for the log."""
    if "valid_mse" in ev:
        return (f"validation reconstruction MSE {ev['valid_mse']:.5f} per pixel value, NLL "
                f"{ev['valid_recon_nll']:.1f} nats/image")
    line = (f"validation reconstruction NLL {ev['valid_recon_nll']:.3f} nats/sentence "
            f"({ev['valid_recon_nll_token']:.3f} nats/token)")
    if "valid_mi" in ev:
        line += (f"; latent: MI {_num(ev['valid_mi'])} nats, active units {ev['valid_active_units']}, "
                 f"shuffled-latent gap {_num(ev['valid_shuffle_gap'])} nats/sentence")
    fit = prior_fit_line(ev, "valid_fit_")
    return f"{line}; {fit}" if fit else line


def prior_fit_line(d: dict, prefix: str = "") -> str:
    """The prior-fit numbers of a record in words (empty when it has none)."""
    parts = []
    for metric, fmt in (("grammatical", "{:.3f}"), ("fppl", "{:.1f}")):
        for rule in ("decode", "greedy"):
            a, b = d.get(f"{prefix}prior_{rule}_{metric}"), d.get(f"{prefix}posterior_{rule}_{metric}")
            if a is not None and b is not None:
                ratio = d.get(f"{prefix}ratio_{rule}_{metric}")
                parts.append(f"{metric} ({'greedy' if rule == 'greedy' else 'decoded'}) prior {fmt.format(a)} / "
                             f"posterior {fmt.format(b)}" + (f" = {ratio:.2f}" if ratio is not None else ""))
    if d.get(f"{prefix}mmd2") is not None:
        parts.append(f"MMD^2 {d[f'{prefix}mmd2']:.3f} (p {d[f'{prefix}mmd_p']:.2f})")
    if d.get(f"{prefix}f_gap") is not None:
        parts.append(f"f gap {d[f'{prefix}f_gap']:.2f}")
    return ("prior fit: " + ", ".join(parts)) if parts else ""


def report_lines(summary: dict) -> List[str]:
    """What ``textebm train`` prints at the end: validation numbers at the start and the end of the run."""
    end = {k[:-4]: v for k, v in summary.items() if k.endswith("_end") and k.startswith("valid_")}
    start = {k[:-6]: v for k, v in summary.items() if k.endswith("_start") and k.startswith("valid_")}
    if not end:
        return []
    if "valid_mse" in end:
        return [f"validation reconstruction MSE (per pixel value): start {start['valid_mse']:.5f} -> end "
                f"{end['valid_mse']:.5f}"]
    lines = [f"validation reconstruction NLL (nats/sentence): start {start['valid_recon_nll']:.3f} -> end "
             f"{end['valid_recon_nll']:.3f}"]
    if "valid_mi" in end:
        d = summary.get("latent_dim")
        lines.append(f"latent usage at the end: mutual information {_num(end['valid_mi'])} nats, active units "
                     f"{_num(end['valid_active_units'], 0)}" + (f" of {d}" if d else "") + f", shuffled-latent gap "
                     f"{_num(end['valid_shuffle_gap'])} nats/sentence, KL {_num(end['valid_kl'])} nats/sentence, "
                     f"reconstruction token accuracy {_num(end['valid_recon_token_acc'], 3)}")
    fit = prior_fit_line(end, "valid_fit_")
    if fit:
        lines.append(f"{fit} (at the end)")
    if summary.get("time_wall_s"):
        lines.append(f"validation took {100 * summary['validation_fraction']:.1f} % of the run's "
                     f"{summary['time_wall_s']:.0f} s")
    return lines
