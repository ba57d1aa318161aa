"""The `edge-app` dispatcher itself."""

from __future__ import annotations

import subprocess
import sys


def test_a_reader_that_goes_away_is_no_traceback() -> None:
    """`edge-app model inspect MODEL | head -1`: the reader may leave before the output is
    written; the command stops quietly instead of printing a BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_app.cli", "model", "inspect", "shapes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # gone before the command (still importing) writes a line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
