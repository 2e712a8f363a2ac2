"""Data-parallel Co-Reg on CPU: 2 gloo processes (torchrun, batch B/2 each)
against 1 process with batch B, same data and seed.

Runs the fit of ``tests/_ddp_fit.py`` (96 images of 16 px, 3 classes, small
CNN, 4 epochs of which 2 warm-up, B = 16) under ``torchrun`` with 2
processes, then in this process with B, B/2 and 2B, and prints: whether the
2 ranks end bit-identical, the relative distance of the weights
(||w - w_B|| / ||w_B||) of each run to the 1-process run with B, the
warm-up losses, the agreement of predictions and the wall time of each
run. The 1-process runs with another batch size are the scale against
which the 2-process difference is judged. The fits are already tiny, so
``--smoke`` runs the same.

Examples
--------
python benchmarks/data_parallel_cpu.py --smoke
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import _ddp_fit  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the same small run")
    parser.parse_args(argv)
    torch.set_num_threads(1)
    X, Y = _ddp_fit.make_data()
    runs, times = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", _ddp_fit.__file__, f"{tmp}/two"],
                       env=env, check=True, capture_output=True)
        times["2 processes, B/2 each"] = time.perf_counter() - start
        ranks = [torch.load(f"{tmp}/two.rank{r}.pt", weights_only=False) for r in (0, 1)]
        runs["2 processes, B/2 each"] = ranks[0]
        for name, batch in (("1 process, B", 16), ("1 process, B/2", 8), ("1 process, 2B", 32)):
            start = time.perf_counter()
            clf = _ddp_fit.make_estimator().set_params(batch_size=batch, verbose=0).fit(X, Y)
            times[name] = time.perf_counter() - start
            runs[name] = _ddp_fit.result(clf, X)
    identical = all(torch.equal(v, ranks[1]["state"][k]) for k, v in ranks[0]["state"].items())
    print(f"2 ranks bit-identical at the end (every parameter and buffer): {identical}")
    ref = runs["1 process, B"]
    print(f"{'run':>22}  {'weights vs 1 process B':>22}  {'warm-up loss_pce':>18}  "
          f"{'same prediction':>15}  {'wall s':>6}")
    for name, run in runs.items():
        agree = (run["proba"].argmax(1) == ref["proba"].argmax(1)).mean()
        losses = " ".join(f"{v:.4f}" for v in run["history"]["loss_pce"][:2])
        distance = _ddp_fit.relative_distance(run["state"], ref["state"])
        print(f"{name:>22}  {distance:22.4f}  {losses:>18}  "
              f"{agree:15.3f}  {times[name]:6.1f}")


if __name__ == "__main__":
    main()
