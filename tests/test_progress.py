import io

import pytest
from rich.console import Console

from lpa.progress import Bar, progress, progress_bar, progress_enabled


def test_progress_yields_every_item_in_order_when_disabled():
    assert list(progress(range(5), "x", enabled=False)) == [0, 1, 2, 3, 4]


def test_a_short_loop_is_quiet_when_not_a_tty(monkeypatch, capsys):
    monkeypatch.delenv("LPA_PROGRESS", raising=False)
    monkeypatch.delenv("LPA_PROGRESS_EVERY", raising=False)
    assert progress_enabled() is True  # reported, but as timed lines: pytest's stderr is not a terminal
    assert list(progress(["a", "b"], "quiet")) == ["a", "b"]
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_a_long_loop_prints_timed_lines_to_a_log(monkeypatch, capsys):
    monkeypatch.delenv("LPA_PROGRESS", raising=False)
    monkeypatch.setenv("LPA_PROGRESS_EVERY", "0")  # every advance is "long enough"
    with progress_bar("generating", 4, completed=1) as bar:  # resumed: one answer was on disk
        bar.advance()
        bar.describe("generating (pair)")
        bar.advance(2)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2  # one per advance; the closing line would repeat the last count, so it is left out
    assert "generating: 2/4 (50%)" in lines[0] and "eta" in lines[0] and "elapsed" in lines[0]
    assert "generating (pair): 4/4 (100%)" in lines[-1] and "eta" not in lines[-1]
    monkeypatch.setenv("LPA_PROGRESS_EVERY", "3600")
    with progress_bar("judging", 2) as bar:
        assert bar._lines is not None
        bar._lines.printed = 0  # as if a line had been printed at 0 an interval ago
        bar.advance(2)  # within the interval: no line now...
    assert capsys.readouterr().err.splitlines()[-1].split(" ", 1)[1].startswith("judging: 2/2 (100%)")  # the end
    monkeypatch.setenv("LPA_PROGRESS", "0")
    assert list(progress(range(3), "silenced")) == [0, 1, 2] and capsys.readouterr().err == ""


def test_a_bad_line_interval_is_one_clear_error(monkeypatch):
    from lpa.cli.main import run
    from lpa.errors import LpaError

    monkeypatch.setenv("LPA_PROGRESS_EVERY", "soon")
    with pytest.raises(LpaError, match="LPA_PROGRESS_EVERY='soon'"):
        progress_bar("x", 1).__enter__()
    assert run(["models", "--help"]) == 2
    monkeypatch.setenv("LPA_PROGRESS_EVERY", "30")
    assert run(["models", "--help"]) == 0


def test_third_party_tqdm_bars_stay_out_of_a_log(monkeypatch):
    """transformers' GGUF loader calls tqdm itself; off a terminal its carriage-return frames would fill the log."""
    import os

    from lpa.cli.main import run

    monkeypatch.setenv("TQDM_DISABLE", "placeholder")  # restored (removed) after the test
    monkeypatch.delenv("TQDM_DISABLE")
    assert run(["models", "--help"]) == 0
    assert os.environ.get("TQDM_DISABLE") == "1"


def test_env_overrides(monkeypatch):
    monkeypatch.setenv("LPA_PROGRESS", "0")
    assert progress_enabled() is False
    monkeypatch.setenv("LPA_PROGRESS", "1")
    assert progress_enabled() is True
    assert progress_enabled(False) is False


def test_bar_counts_and_renders_rate(monkeypatch):
    buffer = io.StringIO()
    bar = Bar("judging", 4, enabled=True, console=Console(file=buffer, force_terminal=True, width=120))
    for _ in range(4):
        bar.advance()
    bar.close()
    assert bar.completed == 4
    assert "judging" in buffer.getvalue() and "4/4" in buffer.getvalue()


def test_progress_bar_closes_on_error():
    try:
        with progress_bar("x", 3, enabled=True) as bar:
            bar.advance(2)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert bar._progress is None and bar.completed == 2
