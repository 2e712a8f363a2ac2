"""SIGKILL a training process during an epoch and during each step of a
checkpoint save, then resume in this process: the last complete checkpoint
survives and the resumed fit equals an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _table import _clean, check_section
from test_checkpoints import X, Y, make

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

# Trains Co-Reg for 6 epochs with a checkpoint each epoch, and stops still
# (writing a marker file) at the chosen point of epoch 4 for the parent to
# kill it: inside the epoch, halfway through writing a file of the epoch-4
# save, or halfway through writing its manifest.
CHILD = """
import sys, time
from pathlib import Path
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
from skorch.callbacks import Callback
from sklearn_npll.callbacks import checkpoint as cb
from test_checkpoints import X, Y, make
folder, where = Path(sys.argv[2]), sys.argv[3]

def stop_here():
    (folder.parent / (folder.name + ".ready")).touch()
    time.sleep(120)

class StopInEpoch(Callback):
    def on_batch_end(self, net, **kwargs):
        if where == "epoch" and len(net.history) == 4:
            stop_here()

write = cb._write_durably
def write_then_stop(path, data):
    path = str(path)
    if (where == "file" and ".epoch-0004-" in path and path.endswith("module2.pt")) or (
            where == "manifest" and Path(path).name.startswith("checkpoint.json")
            and b'"epoch": 4,' in data):
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
        stop_here()
    write(path, data)
cb._write_durably = write_then_stop
make("CoRegClassifier", folder, max_epochs=6, callbacks=[("stop", StopInEpoch())]).fit(X, Y)
"""

WHERE = {"epoch": "SIGKILL during epoch 4 (inside a batch)",
         "file": "SIGKILL while the epoch-4 save writes module2.pt",
         "manifest": "SIGKILL while the epoch-4 save writes checkpoint.json"}


def kill_all(tmp_path):
    """Start one training process per kill point (in parallel), SIGKILL each
    when it reaches its point; return the checkpoint folders."""
    children = {where: subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT),
                                         str(tmp_path / where), where]) for where in WHERE}
    try:
        deadline = time.monotonic() + 240
        for where, child in children.items():
            while not (tmp_path / (where + ".ready")).exists():
                assert child.poll() is None, f"{where}: the process ended ({child.returncode})"
                assert time.monotonic() < deadline, f"{where}: the point was never reached"
                time.sleep(0.05)
            os.kill(child.pid, signal.SIGKILL)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
            child.wait()
    assert all(child.returncode == -signal.SIGKILL for child in children.values())
    return {where: tmp_path / where for where in WHERE}


def test_sigkill_during_an_epoch_or_a_save_keeps_the_last_checkpoint(tmp_path):
    uninterrupted = make("CoRegClassifier", max_epochs=6).fit(X, Y).predict_proba(X)
    rows = []
    folders = kill_all(tmp_path)
    for where, case in WHERE.items():
        folder = folders[where]
        saved = json.loads((folder / "checkpoint.json").read_text())["epoch"]
        leftovers = sorted(p.name for p in folder.iterdir() if not p.name.startswith("epoch-"))
        resumed = make("CoRegClassifier", folder, resume=True, max_epochs=6).fit(X, Y)
        same = np.array_equal(resumed.predict_proba(X), uninterrupted)
        after = sorted(p.name for p in folder.iterdir())
        rows.append((case, _clean(f"checkpoint of epoch {saved} kept (leftovers {leftovers}); resumed "
                     f"to {len(resumed.history_)} epochs, predictions "
                     f"{'identical to' if same else 'DIFFERENT from'} an uninterrupted fit; "
                     f"{len(after)} files after the next saves")))
        assert saved == 3 and same and len(resumed.history_) == 6, rows[-1]
        assert len(after) == 2 and after[0] == "checkpoint.json", after
    check_section("kills", rows)
