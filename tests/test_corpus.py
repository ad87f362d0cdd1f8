"""Every case of the bad-input corpus through the CLI and through the GUI's open/drop path: one clear line or a
banner, a non-zero exit, no traceback, no partial output, no hang, nothing lost."""

from __future__ import annotations

import faulthandler
import re
import sys

import numpy as np
import pytest
from corpus import build
from fake_backend import FakeBackend
from helpers import open_window

from noisebrush.cli import main
from noisebrush.engine.engine import Engine
from noisebrush.gui.document import qimage_to_rgba

CASE_LIMIT_S = 60  # a hang fails the run loudly (with every thread's stack) instead of stalling CI


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build(tmp_path_factory.mktemp("corpus"))


def bounded(fn):
    faulthandler.dump_traceback_later(CASE_LIMIT_S, exit=True, file=sys.__stderr__)
    try:
        return fn()
    finally:
        faulthandler.cancel_dump_traceback_later()


def test_every_case_through_the_cli(corpus, tiny_model, tmp_path, capsys):
    seen = []
    for case in corpus:
        out = tmp_path / f"{len(seen)}.png"
        args = ["generate", "--prompt", "x", "--model", tiny_model, "--steps", "1", "--width", "64", "--height", "64",
                "--control", f"{case.kind}={case.path}", "--out", str(out)]  # fmt: skip
        code = bounded(lambda a=args: main(a))
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("noisebrush: error:")]
        seen.append((case.name, code))
        assert "Traceback" not in err, case.name
        if case.cli == "ok":
            assert code == 0 and out.is_file(), (case.name, err)
        else:
            assert code == 2 and len(errors) == 1 and not out.exists(), (case.name, err)
    assert len(seen) == len(corpus) >= 25


CLASS_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception|Warning)\b")


def test_every_case_through_the_gui_open_path(corpus, qtbot, tmp_path):
    w = open_window(qtbot, tmp_path, Engine(FakeBackend()))
    try:
        w.state.update(prompt="my prompt", seed_locked=True, seed=77)
        stroke = w.doc.layers["scribble"]
        from PySide6.QtGui import QColor, QPainter

        p = QPainter(stroke.image)  # a sketch that must survive every bad file
        p.fillRect(10, 10, 200, 20, QColor(20, 20, 20))
        p.end()
        before = qimage_to_rgba(stroke.image)
        for case in corpus:
            w.banner.hide()
            settings = w.state.settings
            undo_index = w.doc.undo_stack.index()
            if case.path.suffix.lower() != ".json":  # pictures are read on a worker
                with qtbot.waitSignal(w.files.files_read, timeout=CASE_LIMIT_S * 1000):
                    bounded(lambda c=case: w.open_files([str(c.path)]))
            else:
                bounded(lambda c=case: w.open_files([str(c.path)]))
            if case.expect == "error":
                assert w.banner.isVisible() and w.banner.label.text(), case.name
                text = w.banner.label.text()
                assert "\n" not in text and "Traceback" not in text, case.name
                assert case.path.name in text and not CLASS_NAME.search(text), (case.name, text)  # a sentence
                assert w.state.settings == settings and w.doc.undo_stack.index() == undo_index, case.name
                assert np.array_equal(qimage_to_rgba(stroke.image), before), case.name
            else:
                assert not w.banner.isVisible(), (case.name, w.banner.label.text())
                assert w.doc.undo_stack.index() == undo_index + 1, case.name  # loaded into a layer, undoably
                w.doc.undo_stack.undo()
                assert np.array_equal(qimage_to_rgba(stroke.image), before), case.name
    finally:
        w.close()
