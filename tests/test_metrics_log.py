"""metrics.jsonl (textebm.metrics_log): a torn last line (what a kill or a full disk leaves) is skipped by
readers with a warning, and a logger that continues the file starts on a fresh line, losing nothing."""
import json

import pytest

from textebm.eval.plots import read_metrics
from textebm.metrics_log import METRICS_FILE, MetricsLogger, first_record_with

from conftest import run_main

TORN = b'{"step": 3, "dec_nll": 2.5, "prior_lo'


def write_torn(run):
    run.mkdir(exist_ok=True)
    good = b"".join(json.dumps({"step": s, "dec_nll": 3.0 - 0.1 * s, "valid_recon_nll": 9.0 - s}).encode() + b"\n"
                    for s in (0, 1, 2))
    (run / METRICS_FILE).write_bytes(good + TORN)
    return run / METRICS_FILE


def test_readers_skip_a_torn_last_line_with_a_warning(tmp_path, capsys):
    """Row 11 (readers): `plot` refused the whole file because of its torn last line."""
    path = write_torn(tmp_path / "run")
    assert [r["step"] for r in read_metrics(path)] == [0, 1, 2]
    assert "torn last record" in capsys.readouterr().err
    assert first_record_with(tmp_path / "run", "valid_recon_nll")["step"] == 0  # the resume summary's reader
    pytest.importorskip("matplotlib")
    code, out, err = run_main(capsys, "plot", tmp_path / "run", "--chain-steps", "0")
    assert code == 0, err
    assert (tmp_path / "run" / "plots" / "decoder_nll.png").is_file()
    assert any("torn last record" in line for line in err), err


def test_a_resumed_logger_starts_on_a_fresh_line_and_keeps_the_torn_bytes(tmp_path, capsys):
    """Row 11 (resume): the next record was appended onto the torn line, and so lost."""
    path = write_torn(tmp_path / "run")
    with MetricsLogger(tmp_path / "run") as ml:
        ml.log({"step": 3, "dec_nll": 2.6})
    assert "torn record" in capsys.readouterr().err
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and json.loads(lines[-2]) == {"step": 3, "dec_nll": 2.6}
    assert json.loads(lines[-3]) == {"torn_record": TORN.decode()}
    assert [r.get("step") for r in read_metrics(path)] == [0, 1, 2, None, 3]


def test_a_middle_line_that_is_not_json_is_still_an_error(tmp_path):
    from textebm.metrics_log import read_records

    run = tmp_path / "run"
    run.mkdir()
    (run / METRICS_FILE).write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        read_records(run / METRICS_FILE)
