"""hrvlm.core.progress: bars on a terminal only; a log gets plain lines (no carriage returns) or nothing."""
from __future__ import annotations

import io

import nbformat
import pytest

from hrvlm.book import build as book
from hrvlm.core import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_mode_follows_stderr_unless_the_environment_names_one(monkeypatch):
    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert progress.mode() == "lines"
    monkeypatch.setattr("sys.stderr", Terminal())
    assert progress.mode() == "bar"
    monkeypatch.setenv(progress.MODE_ENV, "none")
    assert progress.mode() == "none"
    monkeypatch.setenv(progress.MODE_ENV, "sparkles")  # not a mode: stderr decides
    assert progress.mode() == "bar"


def test_a_log_gets_lines_without_carriage_returns_that_the_book_strips(monkeypatch):
    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)  # a line per step
    bar = progress.progress(range(5), total=5, desc="train hrvlm")
    assert isinstance(bar, progress.Lines)
    for _ in bar:
        bar.set_postfix(loss="0.5")
    bar.close()
    text = log.getvalue()
    assert "\r" not in text and text.count("\n") == 6  # five steps and the closing line
    assert text.splitlines()[-1].startswith("train hrvlm: 5/5 [") and text.rstrip().endswith("loss=0.5")
    # the book removes them from a chapter's page like any progress output
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[
        nbformat.v4.new_output("stream", name="stderr", text=text)])])
    assert book.strip_progress(nb) == 1


def test_a_short_loop_in_a_log_prints_nothing(monkeypatch):
    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    bar = progress.progress(total=3, desc="x")
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert log.getvalue() == ""


@pytest.mark.parametrize("mode, enabled", [("none", True), ("bar", False)])
def test_none_or_disabled_is_silent_even_on_a_terminal(mode, enabled, monkeypatch):
    monkeypatch.setenv(progress.MODE_ENV, mode)
    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    assert list(progress.progress(range(3), total=3, enabled=enabled)) == [0, 1, 2]
    assert screen.getvalue() == ""


def test_evaluation_in_a_log_writes_no_carriage_return(clip, monkeypatch, capsys):
    from hrvlm.evaluation.evaluate import EvalRequest, evaluate

    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)
    model, tokenizer = clip
    evaluate(model, tokenizer, EvalRequest("mini-heldout", n=8, batch_size=4), progress=True)
    err = capsys.readouterr().err
    assert "mini-heldout L0 clean: 2" in err and "\r" not in err


def test_the_book_passes_its_own_mode_to_the_kernels(monkeypatch):
    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a builder writing to a log
    import os

    with book._kernel_environment():
        assert os.environ[progress.MODE_ENV] == "lines"
    assert progress.MODE_ENV not in os.environ
