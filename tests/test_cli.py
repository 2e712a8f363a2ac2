"""The command-line program: train end to end on a folder of mixed photos
with a tiny random open_clip model, resume after SIGKILL, predict with the
saved model and its ONNX export, the verify loop, and one-line errors."""

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _common import TINY_CLIP_NAME, save_tiny_clip
from test_report import _COUNT_IMAGES, _chromium, _run_chromium
from sklearn_npll import cli
from sklearn_npll._cli.defaults import choose_settings
from sklearn_npll._data.image_store import resolve_auto_size
from sklearn_npll._runtime import resolve_device
from sklearn_npll.io import load

pytest.importorskip("matplotlib")
pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["red", "green", "blue"]
EPOCHS = 4


def _photo(rng, label, i):
    """A coloured square on noise, of a random size, in one of four
    colour modes / formats: RGB PNG, grey PNG, RGBA PNG, RGB JPEG."""
    h, w = rng.randint(18, 40, 2)
    pixels = rng.randint(0, 60, (h, w, 3)).astype(np.uint8)
    pixels[h // 4:3 * h // 4, w // 4:3 * w // 4, label] += 180
    image = Image.fromarray(pixels)
    kind = i % 4
    image = {1: image.convert("L"), 2: image.convert("RGBA")}.get(kind, image)
    return image, "jpg" if kind == 3 else "png"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """36 photos in a folder and a subfolder; their true labels by name."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "more").mkdir()
    rng = np.random.RandomState(0)
    labels, sizes = {}, []
    for i in range(36):
        image, ext = _photo(rng, i % 3, i)
        name = f"{'more/' if i % 2 else ''}photo{i:02d}.{ext}"
        image.save(folder / name)
        labels[name] = CLASSES[i % 3]
        sizes.append((image.height, image.width))
    return folder, labels, sizes


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The tiny open_clip architecture's config file and random weights."""
    folder = tmp_path_factory.mktemp("clip")
    weights = save_tiny_clip(folder)
    return str(folder / f"{TINY_CLIP_NAME}.json"), weights


def train_args(photos, run, clip, *extra):
    config, weights = clip
    return ["train", str(photos), "--classes", ",".join(CLASSES), "--out", str(run),
            "--model", TINY_CLIP_NAME, "--model-config", config, "--pretrained", weights,
            "--epochs", str(EPOCHS), "--backbone", "small-cnn", "--width", "8",
            "--device", "cpu", *extra]          # the CPU: bit-identical resumes


def run_cli(args):
    """``(status, stdout, stderr)`` of ``sklearn-npll args``, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = cli.main(args)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(photos, clip, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    status, out, err = run_cli(train_args(photos[0], run, clip))
    assert status == 0, err
    return run, out, err


def _proba(run, photos):
    model = load(Path(run) / "model.safetensors")
    files = [str(photos / name) for name in json.loads((Path(run) / "run.json")
                                                       .read_text())["images"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model, model.predict_proba(files)


def _epochs_printed(stdout):
    """The epochs of skorch's per-epoch table in ``stdout``."""
    return [int(line.split()[0]) for line in stdout.splitlines()
            if line.strip() and line.split()[0].isdigit()]


# ------------------------------------------------------------------- train
def test_train_writes_every_output_in_run(trained, photos):
    run, out, err = trained
    expected = {"run.json", "training.json", "annotation.npz", "cache", "checkpoint",
                "model.safetensors", "model.onnx", "classes.json", "summary.json",
                "summary.md", "report.html"}
    assert expected <= {p.name for p in run.iterdir()}
    assert any((run / "cache").rglob("*")), "the annotator's cache is empty"
    manifest = json.loads((run / "checkpoint" / "checkpoint.json").read_text())
    assert manifest["epoch"] == EPOCHS
    assert json.loads((run / "classes.json").read_text()) == CLASSES
    identity = json.loads((run / "run.json").read_text())
    assert sorted(identity["images"]) == sorted(photos[1])
    summary = json.loads((run / "summary.json").read_text())
    assert {"teacher", "data", "parameters", "result", "seconds", "versions"} <= set(summary)
    assert summary["teacher"]["model"] == TINY_CLIP_NAME
    assert summary["data"]["n_images"] == 36 and summary["parameters"]["epochs"] == EPOCHS
    assert summary["versions"]["sklearn_npll"]
    model, proba = _proba(run, photos[0])
    assert list(model.classes_) == CLASSES and len(model.history_) == EPOCHS
    assert 0 <= summary["result"]["agreement_with_teacher"] <= 1
    html = (run / "report.html").read_text(encoding="utf-8")
    assert html.count("<figure") >= 6 and "data:image/png;base64," in html
    assert "Traceback" not in err
    for n in range(1, 7):
        assert f"[{n}/6]" in err


def test_train_prints_the_defaults_it_chose_from_the_data(trained, photos):
    _, _, err = trained
    h, w = resolve_auto_size(photos[2])
    assert f"image size {h}x{w} (median shorter side of the photos" in err
    assert "batch size 8 (" in err and f"epochs {EPOCHS} (given)" in err
    assert "device cpu (given)" in err
    model, _ = _proba(trained[0], photos[0])
    assert model.image_size_ == (h, w) and model.batch_size == 8
    args = cli.build_parser().parse_args(["train", "photos", "--classes", "a,b", "--out", "r"])
    settings, device, reasons = choose_settings(args, [(300, 400)] * 3000)
    assert device == str(resolve_device("auto")) and reasons["device"] == "CUDA when available"
    assert settings["image_size"] == [300, 400] and settings["epochs"] == 60
    assert settings["warmup_epochs"] == 30 and settings["batch_size"] == 256


def test_the_same_command_again_reuses_the_finished_run(trained, photos, clip):
    run, _, _ = trained
    before = (run / "model.safetensors").stat().st_mtime_ns
    status, out, err = run_cli(train_args(photos[0], run, clip))
    assert status == 0, err
    assert "reusing the candidate sets" in err and "already trained" in err
    assert _epochs_printed(out) == []
    assert (run / "model.safetensors").stat().st_mtime_ns == before


def test_report_command_rebuilds_the_report_and_it_renders(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    (run / "report.html").unlink()
    status, _, err = run_cli(["report", str(run)])
    assert status == 0, err
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "36 photos, 3 classes" in html
    if _chromium() is None:
        pytest.skip("no Chromium binary on PATH to render the report")
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", _COUNT_IMAGES), encoding="utf-8")
    dom = _run_chromium(_chromium(), "--virtual-time-budget=10000", "--dump-dom",
                        probe.as_uri()).stdout
    n_images = html.count("<img ")
    assert n_images > 6 and f'data-loaded="{n_images}"' in dom    # every image decoded


# Runs the command, and stops still (writing a marker file) right after the
# checkpoint of epoch 2 is saved, for the test to kill it.
CHILD = """
import sys, time
from pathlib import Path
from sklearn_npll import cli
from sklearn_npll._cli.defaults import choose_settings
from sklearn_npll.callbacks import checkpoint

save = checkpoint.TrainingCheckpoint.save_model
def save_then_stop(self, net):
    save(self, net)
    if len(net.history) == 2:
        Path(sys.argv[1]).touch()
        time.sleep(300)
checkpoint.TrainingCheckpoint.save_model = save_then_stop
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_then_the_same_command_resumes_to_the_same_model(trained, photos, clip,
                                                                  tmp_path):
    run, marker = tmp_path / "run", tmp_path / "epoch-2-saved"
    args = train_args(photos[0], run, clip)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "epoch 2 was never saved"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (run / "model.safetensors").exists()
    status, out, err = run_cli(args)
    assert status == 0, err
    assert f"resuming from the checkpoint of epoch 2 of {EPOCHS}" in err
    assert _epochs_printed(out) == [3, 4]           # epochs 1 and 2 were not run again
    _, resumed = _proba(run, photos[0])
    _, uninterrupted = _proba(trained[0], photos[0])
    np.testing.assert_array_equal(resumed, uninterrupted)


def test_ctrl_c_saves_nothing_as_finished_and_the_same_command_continues(
        trained, photos, clip, tmp_path, monkeypatch):
    from sklearn_npll.callbacks import checkpoint

    save = checkpoint.TrainingCheckpoint.save_model

    def save_then_interrupt(self, net):
        save(self, net)
        if len(net.history) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.TrainingCheckpoint, "save_model", save_then_interrupt)
    run = tmp_path / "run"
    status, out, err = run_cli(train_args(photos[0], run, clip))
    assert status == 130 and "Run the same command again" in err.splitlines()[-1]
    # (epoch 3 was saved, then interrupted before its line was printed)
    assert _epochs_printed(out) == [1, 2] and not (run / "model.safetensors").exists()
    assert json.loads((run / "checkpoint" / "checkpoint.json").read_text())["epoch"] == 3
    monkeypatch.setattr(checkpoint.TrainingCheckpoint, "save_model", save)
    status, out, err = run_cli(train_args(photos[0], run, clip))
    assert status == 0 and _epochs_printed(out) == [4]
    np.testing.assert_array_equal(_proba(run, photos[0])[1], _proba(trained[0], photos[0])[1])


# ----------------------------------------------------------------- predict
def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_predict_with_onnx_agrees_with_python(trained, photos, tmp_path):
    run = trained[0]
    # a deployment folder: the ONNX model alone
    deployed = tmp_path / "deployed"
    deployed.mkdir()
    shutil.copy(run / "model.onnx", deployed / "model.onnx")
    status, _, err = run_cli(["predict", str(run), str(photos[0]), "--out",
                              str(tmp_path / "python.csv")])
    assert status == 0, err
    status, _, err = run_cli(["predict", str(deployed), str(photos[0]), "--onnx", "--out",
                              str(tmp_path / "onnx.csv")])
    assert status == 0, err
    python, onnx = _read_csv(tmp_path / "python.csv"), _read_csv(tmp_path / "onnx.csv")
    assert len(python) == 36 and list(python[0]) == ["file", "class", "probability"]
    assert [r["file"] for r in python] == [r["file"] for r in onnx]
    assert [r["class"] for r in python] == [r["class"] for r in onnx]
    np.testing.assert_allclose([float(r["probability"]) for r in onnx],
                               [float(r["probability"]) for r in python], atol=1e-4)
    _, proba = _proba(run, photos[0])
    by_name = dict(zip(json.loads((run / "run.json").read_text())["images"], proba))
    for row in python:
        p = by_name[Path(row["file"]).relative_to(photos[0]).as_posix()]
        assert row["class"] == CLASSES[p.argmax()]
        assert float(row["probability"]) == pytest.approx(p.max(), abs=1e-6)
    status, _, err = run_cli(["predict", str(deployed), str(photos[0])])
    assert status == 1 and "not a RUN folder" in err     # the Python model is not there


def test_predict_writes_csv_to_stdout_for_files_and_folders(trained, photos):
    one = photos[0] / "photo00.png"
    status, out, _ = run_cli(["predict", str(trained[0]), str(one), str(photos[0] / "more")])
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1 + 18 and rows[0]["file"] == str(one)
    assert {r["class"] for r in rows} <= set(CLASSES)


# ------------------------------------------------------------------ verify
def test_verify_then_train_with_the_filled_labels(trained, photos, clip, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    status, _, err = run_cli(["verify", str(run), "--n", "6"])
    assert status == 0, err
    rows = _read_csv(run / "verify.csv")
    assert len(rows) == 6 and all(r["label"] == "" for r in rows)
    disagree = [r["student"] != r["teacher"] for r in rows]
    assert disagree == sorted(disagree, reverse=True)    # disagreements first
    for group in (True, False):
        confidence = [float(r["student_probability"]) for r, d in zip(rows, disagree)
                      if d == group]
        assert confidence == sorted(confidence)          # then the least confident
    for row in rows[:4]:                                 # a person checks four
        row["label"] = photos[1][row["file"]]
    with open(run / "verify.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    status, out, err = run_cli(train_args(photos[0], run, clip, "--verified",
                                          str(run / "verify.csv")))
    assert status == 0, err
    assert "4 verified labels" in err and "training afresh" in err
    assert _epochs_printed(out) == [1, 2, 3, 4]
    model, proba = _proba(run, photos[0])
    names = json.loads((run / "run.json").read_text())["images"]
    rows_verified = [names.index(r["file"]) for r in rows[:4]]
    # verified samples are trusted by both networks in every division
    np.testing.assert_array_equal(model.trust_[:, rows_verified], 1.0)
    assert json.loads((run / "summary.json").read_text())["parameters"]["n_verified"] == 4
    # verify again keeps the labelled rows and lists other photos
    status, _, _ = run_cli(["verify", str(run), "--n", "3"])
    again = _read_csv(run / "verify.csv")
    assert status == 0 and [r["label"] for r in again[:4]] == [r["label"] for r in rows[:4]]
    assert len(again) == 7
    assert not {r["file"] for r in again[4:]} & {r["file"] for r in rows[:4]}


@pytest.mark.parametrize("label, file, message", [
    ("zebra", None, "labels that are not classes: zebra"),
    ("red", "nowhere.png", "not among the training images: nowhere.png"),
])
def test_verified_labels_that_do_not_fit_are_refused(trained, photos, clip, tmp_path,
                                                      label, file, message):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    labels = tmp_path / "labels.csv"
    labels.write_text(f"file,label\n{file or 'photo00.png'},{label}\nphoto03.jpg,\n")
    status, _, err = run_cli(train_args(photos[0], run, clip, "--verified", str(labels)))
    assert status == 1 and message in err


# ------------------------------------------------------------------ errors
def _one_line_error(status, err, *words):
    assert status == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("sklearn-npll ") and ": error: " in last, err
    assert "Traceback" not in err
    for word in words:
        assert word in last, last


def test_photos_are_checked_as_the_library_reads_them(tmp_path):
    """Sizes are those of the upright photo (EXIF orientation), as the
    classifier's image_size="auto" sees them; reasons are the reader's."""
    from sklearn_npll._cli.inputs import check_images

    turned = Image.new("RGB", (40, 20))
    exif = turned.getexif()
    exif[0x0112] = 6  # rotate 90 degrees to show
    turned.save(tmp_path / "turned.jpg", exif=exif)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    photos = check_images([tmp_path / "turned.jpg", tmp_path / "junk.png"], "skip")
    assert photos.sizes == [(40, 20)] and photos.modes == ["RGB"]
    with pytest.raises(cli.CLIError, match="junk.png .UnidentifiedImageError: not an image "
                                            "format Pillow can identify"):
        check_images([tmp_path / "turned.jpg", tmp_path / "junk.png"], "error")


def test_empty_folder_is_an_error(tmp_path, clip):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("no images here")
    status, _, err = run_cli(train_args(tmp_path / "photos", tmp_path / "run", clip))
    _one_line_error(status, err, "no image files", "empty")
    assert not (tmp_path / "run").exists()


def test_missing_class_file_is_an_error(tmp_path, photos, clip):
    args = train_args(photos[0], tmp_path / "run", clip)
    at = args.index("--classes")
    args[at:at + 2] = ["--classes-file", str(tmp_path / "classes.txt")]
    status, _, err = run_cli(args)
    _one_line_error(status, err, "class file", "does not exist")
    (tmp_path / "classes.txt").write_text("# my classes\ncat\n\ndog\n")
    args[args.index("--out") + 1] = str(tmp_path / "other")
    assert cli.build_parser().parse_args(args).classes_file == str(tmp_path / "classes.txt")
    from sklearn_npll._cli.inputs import read_classes
    assert read_classes(classes_file=str(tmp_path / "classes.txt")) == ["cat", "dog"]


def test_unreadable_images_are_listed_together(tmp_path, photos, clip, trained):
    folder = tmp_path / "photos"
    shutil.copytree(photos[0], folder)
    (folder / "broken.png").write_bytes(b"not an image")
    data = (folder / "more" / "photo03.jpg").read_bytes()
    (folder / "more" / "cut.jpg").write_bytes(data[:len(data) // 2])
    status, _, err = run_cli(train_args(folder, tmp_path / "run", clip))
    _one_line_error(status, err, "2 of 38 image files cannot be read", "broken.png", "cut.jpg",
                    "--on-bad-image skip")
    # predict leaves them out when asked to
    status, out, err = run_cli(["predict", str(trained[0]), str(folder), "--on-bad-image",
                                "skip"])
    assert status == 0 and "Leaving out 2 unreadable" in err
    assert len(list(csv.DictReader(io.StringIO(out)))) == 36


def test_a_run_folder_made_for_other_classes_or_photos_is_refused(trained, photos, clip,
                                                                   tmp_path):
    run = trained[0]
    identity = (run / "run.json").read_text()
    args = train_args(photos[0], run, clip)
    args[args.index("--classes") + 1] = "red,green,yellow"
    status, _, err = run_cli(args)
    _one_line_error(status, err, "was made for the classes red, green, blue",
                    "not red, green, yellow")
    other = tmp_path / "photos"
    shutil.copytree(photos[0], other)
    (other / "photo00.png").unlink()
    status, _, err = run_cli(train_args(other, run, clip))
    _one_line_error(status, err, "was made for other photos", "36 images", "now 35",
                    "1 removed")
    assert (run / "run.json").read_text() == identity
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "thesis.tex").write_text("keep me")
    status, _, err = run_cli(train_args(photos[0], tmp_path / "stranger", clip))
    _one_line_error(status, err, "not empty", "run.json")


def test_python_m_exits_with_status_1_and_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "sklearn_npll", "train", str(tmp_path /
                           "empty"), "--classes", "a,b", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("sklearn-npll train: error: PHOTOS")


def test_the_console_script_is_declared():
    tomllib = pytest.importorskip("tomllib")   # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["sklearn-npll"] == "sklearn_npll.cli:main"
