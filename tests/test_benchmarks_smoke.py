"""Benchmarks that cannot rot: every runnable script in benchmarks/ runs
with --smoke, exits 0 and prints measured figures."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    path.name for path in (ROOT / "benchmarks").glob("*.py")
    if re.search(r'^if __name__ == "__main__":', path.read_text(), re.M)
)
# a number with a non-zero digit, not glued to a word (cell names such as
# "q0.3_eta0.1" do not count), and no "nan" figure
FIGURE = re.compile(r"(?<![\w.])\d*\.?\d*[1-9]\d*(?:\.\d+)?(?![\w.])")


def test_every_runnable_benchmark_is_found():
    # data.py is a library module, the others are scripts
    assert {"run.py", "cost.py", "report.py", "photo_folder.py",
            "annotator_throughput.py"} <= set(SCRIPTS)
    assert "data.py" not in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke(script):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert FIGURE.search(done.stdout), done.stdout[-3000:]
    assert not re.search(r"(?<![\w.])nan(?![\w.])", done.stdout, re.I), done.stdout[-3000:]
    assert not re.search(r"(?<![\w.])0\.0+s(?![\w.])", done.stdout), done.stdout[-3000:]
