"""The command-line program end to end on a generated folder of photos.

In a temporary folder: generates ``--n-photos`` photos (coloured squares on
noise, three classes; sizes 18-40 px; RGB, grey and RGBA; PNG and JPEG; half
of them in a subfolder) and a tiny open_clip model with random weights (no
download; registered with ``--model-config`` and ``--pretrained FILE``),
then runs ``python -m sklearn_npll`` as a user would:

1. ``train`` into RUN_A, uninterrupted;
2. the same command into RUN_B, SIGKILLed as soon as the checkpoint manifest
   in RUN_B names a finished epoch, then the same command again: it must
   resume from that epoch, run only the epochs left, and give a model whose
   ``predict_proba`` equals RUN_A's exactly;
3. ``predict RUN_A PHOTOS`` (Python) against ``predict RUN_A PHOTOS --onnx``:
   the same classes, and the largest difference of the printed probability;
4. ``verify RUN_A``, the label column of some rows filled with their true
   class, then ``train ... --verified`` into RUN_A: it must train afresh and
   trust the verified photos in every division.

Prints one table: each step, its wall seconds (Python start-up included) and
its check with its figure. Exits 1 when a check fails.

Examples
--------
::

    python benchmarks/cli_folder.py                  # 500 photos, 4 epochs
    python benchmarks/cli_folder.py --n-photos 2000 --keep RUNS
    python benchmarks/cli_folder.py --smoke          # 40 photos, the same steps
"""

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CLASSES = ["red", "green", "blue"]


# ------------------------------------------------------------------ photos
def make_photos(folder, n, seed=0):
    """Write ``n`` photos into ``folder`` and its subfolder ``more``.

    Each photo is a square of its class's colour on dark noise, of a random
    size (each side 18-40 px), in turn an RGB PNG, a grey PNG, an RGBA PNG
    and an RGB JPEG (as in the command-line tests).

    Parameters
    ----------
    folder : Path
        An existing empty folder.
    n : int
        Number of photos.
    seed : int, default=0

    Returns
    -------
    labels : dict
        The true class of each photo, by its path relative to ``folder``
        (with ``/``), as the RUN folder names them.
    """
    from PIL import Image

    (folder / "more").mkdir()
    rng = np.random.RandomState(seed)
    labels = {}
    for i in range(n):
        label = i % 3
        h, w = rng.randint(18, 41, 2)
        pixels = rng.randint(0, 60, (h, w, 3)).astype(np.uint8)
        pixels[h // 4:3 * h // 4, w // 4:3 * w // 4, label] += 180
        image = Image.fromarray(pixels)
        kind = i % 4
        image = {1: image.convert("L"), 2: image.convert("RGBA")}.get(kind, image)
        name = f"{'more/' if i % 2 else ''}photo{i:05d}.{'jpg' if kind == 3 else 'png'}"
        image.save(folder / name)
        labels[name] = CLASSES[label]
    return labels


# --------------------------------------------------------------- commands
def _env():
    return {**os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                        os.environ.get("PYTHONPATH")]))}


def cli(*args):
    """Run ``python -m sklearn_npll args``; return ``(seconds, completed)``."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sklearn_npll", *map(str, args)],
                          env=_env(), capture_output=True, text=True)
    return time.perf_counter() - start, done


def _require(done, what):
    if done.returncode != 0:
        raise RuntimeError(f"{what} exited with {done.returncode}:\n{done.stderr[-3000:]}")


def epochs_printed(stdout):
    """The epochs of the per-epoch table that ``train`` prints."""
    return [int(line.split()[0]) for line in stdout.splitlines()
            if line.strip() and line.split()[0].isdigit()]


def checkpoint_epoch(run):
    """The epoch that the checkpoint manifest in ``run`` names, or 0."""
    try:
        return int(json.loads((run / "checkpoint" / "checkpoint.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def train_killed(args, run, timeout=600):
    """Start ``python -m sklearn_npll args`` in its own process group and
    SIGKILL the group as soon as the checkpoint in ``run`` holds a finished
    epoch.

    Returns
    -------
    seconds : float
    epoch : int
        The epoch the checkpoint held when it was killed.
    finished : bool
        Whether the command had already ended by itself.
    """
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "sklearn_npll", *map(str, args)],
                             env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    finished = False
    try:
        while True:
            epoch = checkpoint_epoch(run)
            if epoch >= 1:
                os.killpg(child.pid, signal.SIGKILL)
                break
            if child.poll() is not None:
                finished = True
                break
            if time.perf_counter() - start > timeout:
                raise RuntimeError("no epoch was saved in time")
            time.sleep(0.005)
    finally:
        if child.poll() is None:
            child.kill()
        err = child.stderr.read().decode(errors="replace")
        child.wait()
    if finished and child.returncode != 0:
        raise RuntimeError(f"train exited with {child.returncode}:\n{err[-3000:]}")
    return time.perf_counter() - start, epoch, finished


def proba(run, photos):
    """``predict_proba`` of the model saved in ``run`` on its training photos."""
    from sklearn_npll.io import load

    model = load(run / "model.safetensors")
    names = json.loads((run / "run.json").read_text())["images"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model, model.predict_proba([str(photos / name) for name in names])


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# -------------------------------------------------------------------- main
def run_steps(work, n_photos, epochs, width, n_verify):
    """Run every step in the folder ``work``; return the table's rows
    ``(step, seconds, passed, figure)``."""
    rows = []
    photos, runs = work / "photos", work / "runs"
    photos.mkdir()
    runs.mkdir()
    run_a, run_b = runs / "RUN_A", runs / "RUN_B"

    start = time.perf_counter()
    labels = make_photos(photos, n_photos)
    files = [p for p in photos.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in files}
    rows.append((f"make {n_photos} photos", time.perf_counter() - start,
                 len(files) == n_photos and kinds == {".png", ".jpg"},
                 f"{len(files)} files, {sum(p.parent != photos for p in files)} in the "
                 "subfolder"))

    start = time.perf_counter()
    from _common import TINY_CLIP_NAME, save_tiny_clip   # tests/_common.py, no pytest

    (work / "clip").mkdir()
    weights = save_tiny_clip(work / "clip")
    config = work / "clip" / f"{TINY_CLIP_NAME}.json"
    rows.append(("tiny random open_clip checkpoint", time.perf_counter() - start,
                 Path(weights).is_file(), f"{Path(weights).stat().st_size / 2**20:.1f} MiB"))

    def train_args(run, *extra):
        return ["train", photos, "--classes", ",".join(CLASSES), "--out", run,
                "--model", TINY_CLIP_NAME, "--model-config", config, "--pretrained", weights,
                "--epochs", epochs, "--backbone", "small-cnn", "--width", width,
                "--device", "cpu", *extra]

    # 1. uninterrupted
    seconds, done = cli(*train_args(run_a))
    _require(done, "train RUN_A")
    summary = json.loads((run_a / "summary.json").read_text())
    ok = (epochs_printed(done.stdout) == list(range(1, epochs + 1))
          and checkpoint_epoch(run_a) == epochs and (run_a / "model.onnx").is_file())
    rows.append(("train RUN_A (uninterrupted)", seconds, ok,
                 f"{epochs} epochs, agreement with teacher "
                 f"{summary['result']['agreement_with_teacher']:.3f}"))

    # 2. SIGKILL after a saved epoch, then the same command again
    seconds, killed_at, finished = train_killed(train_args(run_b), run_b)
    ok = (not finished and 1 <= killed_at < epochs
          and not (run_b / "model.safetensors").exists())
    rows.append(("train RUN_B, SIGKILL after a saved epoch", seconds, ok,
                 "ended before the kill" if finished else
                 f"killed with epoch {killed_at} of {epochs} saved"))
    seconds, done = cli(*train_args(run_b))
    _require(done, "train RUN_B again")
    _, resumed = proba(run_b, photos)
    _, uninterrupted = proba(run_a, photos)
    diff = float(np.abs(resumed - uninterrupted).max())
    ok = (f"resuming from the checkpoint of epoch {killed_at} of {epochs}" in done.stderr
          and epochs_printed(done.stdout) == list(range(killed_at + 1, epochs + 1))
          and np.array_equal(resumed, uninterrupted))
    rows.append(("train RUN_B again (resume)", seconds, ok,
                 f"epochs {killed_at + 1}-{epochs} run; predict_proba vs RUN_A: "
                 f"{'equal' if diff == 0 else f'max diff {diff:.3g}'}"))

    # 3. Python against ONNX
    seconds, done = cli("predict", run_a, photos, "--out", work / "python.csv")
    _require(done, "predict")
    python = read_csv(work / "python.csv")
    rows.append(("predict RUN_A PHOTOS (Python)", seconds, len(python) == n_photos,
                 f"{len(python)} rows"))
    seconds, done = cli("predict", run_a, photos, "--onnx", "--out", work / "onnx.csv")
    _require(done, "predict --onnx")
    onnx = read_csv(work / "onnx.csv")
    same = sum(a["file"] == b["file"] and a["class"] == b["class"]
               for a, b in zip(python, onnx))
    diff = max(abs(float(a["probability"]) - float(b["probability"]))
               for a, b in zip(python, onnx))
    rows.append(("predict RUN_A PHOTOS --onnx", seconds,
                 len(onnx) == len(python) and same == len(python) and diff <= 1e-4,
                 f"same class {same}/{len(python)}, max probability diff {diff:.1e}"))

    # 4. verify, a person fills some labels, train --verified
    seconds, done = cli("verify", run_a, "--n", n_verify)
    _require(done, "verify")
    listed = read_csv(run_a / "verify.csv")
    rows.append(("verify RUN_A", seconds,
                 len(listed) == n_verify and all(r["label"] == "" for r in listed),
                 f"{len(listed)} photos to check"))
    n_filled = (2 * n_verify) // 3
    for row in listed[:n_filled]:
        row["label"] = labels[row["file"]]
    with open(run_a / "verify.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(listed[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(listed)
    seconds, done = cli(*train_args(run_a, "--verified", run_a / "verify.csv"))
    _require(done, "train --verified")
    model, _ = proba(run_a, photos)
    names = json.loads((run_a / "run.json").read_text())["images"]
    verified = [names.index(r["file"]) for r in listed[:n_filled]]
    trusted = float(np.asarray(model.trust_)[:, verified].mean())
    n_used = json.loads((run_a / "summary.json").read_text())["parameters"]["n_verified"]
    ok = (f"{n_filled} verified labels" in done.stderr and "training afresh" in done.stderr
          and epochs_printed(done.stdout) == list(range(1, epochs + 1))
          and trusted == 1.0 and n_used == n_filled)
    rows.append(("train RUN_A --verified", seconds, ok,
                 f"{n_used} labels used, retrained {epochs} epochs, "
                 f"trusted {trusted:.0%} of them"))
    return rows


def print_table(rows):
    """Print the rows ``(step, seconds, passed, figure)`` as one table."""
    width = max(len(r[0]) for r in rows)
    print(f"{'step':{width}s}  {'seconds':>8s}  check")
    for step, seconds, passed, figure in rows:
        print(f"{step:{width}s}  {seconds:8.2f}  {'pass' if passed else 'FAIL'}: {figure}")


def main(argv=None):
    """Run the benchmark; return the exit status (1 when a check fails)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-photos", type=int, default=500, help="photos in the folder")
    p.add_argument("--epochs", type=int, default=4, help="training epochs")
    p.add_argument("--width", type=int, default=8, help="channels of the small CNN")
    p.add_argument("--n-verify", type=int, default=12,
                   help="photos that verify lists (two thirds get their label)")
    p.add_argument("--keep", metavar="FOLDER",
                   help="work in FOLDER (new or empty) and keep it, instead of a "
                        "temporary folder")
    p.add_argument("--smoke", action="store_true", help="40 photos, the same steps")
    args = p.parse_args(argv)
    if args.smoke:
        args.n_photos, args.n_verify = 40, 6
    total = time.perf_counter()
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        rows = run_steps(Path(args.keep).resolve(), args.n_photos, args.epochs, args.width,
                         args.n_verify)
    else:
        with tempfile.TemporaryDirectory() as work:
            rows = run_steps(Path(work), args.n_photos, args.epochs, args.width,
                             args.n_verify)
    print_table(rows)
    failed = [r[0] for r in rows if not r[2]]
    print(f"total {time.perf_counter() - total:.1f} s; "
          + (f"FAILED: {', '.join(failed)}" if failed else "every check passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
