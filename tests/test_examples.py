"""The library quick-start example runs and checks what it prints."""
import runpy
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def test_quickstart_example(capsys):
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert "out (5, 3, 40)" in out and "h_n (6, 3, 20)" in out and out.rstrip().endswith("ok")
