"""Checkpoints: complete, atomic, validated; a resume in a new process
gives the model an uninterrupted fit gives."""

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skorch.callbacks import Callback, LoadInitState

from sklearn_npll import CCClassifier, CoRegClassifier, PRODENClassifier
from sklearn_npll.callbacks import checkpoint as callbacks_module
from sklearn_npll.callbacks import CheckpointError, TrainingCheckpoint

ROOT = Path(__file__).resolve().parents[1]
ESTIMATORS = {"CoRegClassifier": CoRegClassifier, "PRODENClassifier": PRODENClassifier,
              "CCClassifier": CCClassifier}
PARAMS = {
    "CoRegClassifier": dict(warmup_epochs=2, start_contrastive=0, queue_size=32, proj_dim=8),
    "PRODENClassifier": dict(lr=0.05),
    "CCClassifier": dict(lr=0.05),
}
COMMON = dict(batch_size=16, module__hidden_sizes=(16,), cosine_epochs=8, random_state=0)


def blobs(n_per_class=12, n_classes=3, d=5, seed=0):
    rng = np.random.RandomState(seed)
    centers = rng.normal(0, 4, (n_classes, d))
    X = np.concatenate([rng.normal(c, 1.0, (n_per_class, d)) for c in centers])
    y = np.repeat(np.arange(n_classes), n_per_class)
    Y = np.eye(n_classes, dtype=np.uint8)[y]
    every_third = np.arange(0, len(y), 3)  # sets of two classes, not of all three
    Y[every_third, (y[every_third] + 1) % n_classes] = 1
    return X.astype(np.float32), Y


X, Y = blobs()


def make(name, folder=None, resume=False, callbacks=(), **params):
    callbacks = list(callbacks)
    if folder is not None:
        cp = TrainingCheckpoint(str(folder))
        callbacks += [("cp", cp)] + ([("resume", LoadInitState(cp))] if resume else [])
    return ESTIMATORS[name](callbacks=callbacks, **{**COMMON, **PARAMS[name], **params})


# The resume runs in a fresh interpreter: nothing but the files carries over.
RESUME_SCRIPT = """
import sys
import numpy as np
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
from test_checkpoints import X, Y, make
for name, folder in zip(sys.argv[2::2], sys.argv[3::2]):
    clf = make(name, folder, resume=True, max_epochs=8).fit(X, Y)
    assert len(clf.history_) == 8, len(clf.history_)
    np.save(folder + "/proba.npy", clf.predict_proba(X))
"""


def test_resume_in_a_new_process_equals_an_uninterrupted_fit(tmp_path):
    args = []
    for name in ESTIMATORS:
        make(name, tmp_path / name, max_epochs=4).fit(X, Y)
        args += [name, str(tmp_path / name)]
    subprocess.run([sys.executable, "-c", RESUME_SCRIPT, str(ROOT), *args], check=True,
                   timeout=300)
    for name in ESTIMATORS:
        uninterrupted = make(name, max_epochs=8).fit(X, Y).predict_proba(X)
        resumed = np.load(tmp_path / name / "proba.npy")
        np.testing.assert_array_equal(resumed, uninterrupted, err_msg=name)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coreg")
    make("CoRegClassifier", folder, max_epochs=3).fit(X, Y)
    return folder


def resume(name, folder, **params):
    return make(name, folder, resume=True, **{"max_epochs": 4, **params}).fit(X, Y)


def current(folder):
    manifest = json.loads((folder / "checkpoint.json").read_text())
    return manifest, folder / manifest["folder"]


def test_each_save_replaces_the_previous_one(saved):
    manifest, files = current(saved)
    assert manifest["epoch"] == 3 and files.name.startswith("epoch-0003-")
    assert sorted(p.name for p in saved.iterdir()) == ["checkpoint.json", files.name]
    assert sorted(manifest["files"]) == sorted(p.name for p in files.iterdir())


def _remove(files, name):
    (files / name).unlink()


def _empty(files, name):
    (files / name).write_bytes(b"")


def _newer_weights(files, name):
    # a torn checkpoint: weights of another epoch next to this history
    other = make("CoRegClassifier", files.parent / "other", max_epochs=4).fit(X, Y)
    _, other_files = current(files.parent / "other")
    shutil.copy(other_files / name, files / name)
    del other


FILES = ["module2.pt", "optimizer.pt", "coreg_state.pt", "history.json", "random_state.pt"]


def _damage_cases(saved, tmp_path):
    """(case, damage(folder) -> estimator to resume, expected message)."""
    cases = []
    for name in FILES:
        for how, damage in (("missing", _remove), ("empty (killed while written in place)",
                                                   _empty)):
            cases.append((f"{name} {how}", lambda f, d=damage, n=name: d(current(f)[1], n),
                          rf"epoch 3 .*{name} (is missing|does not match)"))
    cases += [
        ("module2.pt of a later epoch (torn checkpoint)",
         lambda f: _newer_weights(current(f)[1], "module2.pt"), "module2.pt does not match"),
        ("checkpoint.json missing", lambda f: (f / "checkpoint.json").unlink(),
         "no checkpoint.json"),
        ("checkpoint.json damaged", lambda f: (f / "checkpoint.json").write_text("{") and None,
         "checkpoint.json .* is damaged"),
        ("resumed by another estimator (CCClassifier)", lambda f: "CCClassifier",
         "saved by CoRegClassifier, not CCClassifier"),
        ("resumed on other data (30 of the 36 samples)", lambda f: 30,
         "saved for 36 training samples; this fit has 30"),
        ("empty folder (first run)", lambda f: shutil.rmtree(f) or f.mkdir(), None),
    ]
    return cases


def test_a_missing_damaged_or_foreign_checkpoint_refuses_to_resume(saved, tmp_path):
    from _table import check_section, outcome

    rows = []
    for i, (case, damage, expected) in enumerate(_damage_cases(saved, tmp_path)):
        folder = tmp_path / f"cp{i}"
        shutil.copytree(saved, folder)
        what = damage(folder)
        name = what if isinstance(what, str) else "CoRegClassifier"
        n = what if isinstance(what, int) else len(X)

        def action():
            clf = make(name, folder, resume=True, max_epochs=4).fit(X[:n], Y[:n])
            return f"fits, {len(clf.history_)} epochs"

        if expected is None:
            rows.append((case, outcome(action, [folder])))
            assert rows[-1][1].startswith("fits, 4 epochs"), rows[-1]
            continue
        with pytest.raises(CheckpointError, match=expected):
            action()
        rows.append((case, outcome(action, [folder])))
    check_section("checkpoints", rows)


def test_the_default_dirname_is_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cp = TrainingCheckpoint()
    runs = [make("CCClassifier", max_epochs=epochs,
                 callbacks=[("cp", cp), ("resume", LoadInitState(cp))]).fit(X, Y)
            for epochs in (2, 3)]
    # resumed, not refitted: the first two epochs are the saved ones
    assert runs[1].history_[:2, "dur"] == runs[0].history_[:, "dur"]
    manifest, files = current(tmp_path)
    assert manifest["epoch"] == 3 and files.parent == tmp_path


class RecordNumpy(Callback):
    def on_epoch_end(self, net, **kwargs):
        net.history.record("n_numpy", np.int64(len(net.history)))
        net.history.record("x_numpy", np.float32(0.5))


def test_numpy_values_in_the_history_are_saved(tmp_path):
    cp = TrainingCheckpoint(str(tmp_path))
    kw = {**COMMON, **PARAMS["CCClassifier"]}
    CCClassifier(max_epochs=2, callbacks=[("np", RecordNumpy()), ("cp", cp)], **kw).fit(X, Y)
    resumed = CCClassifier(max_epochs=3, callbacks=[("np", RecordNumpy()), ("cp", cp),
                                                    ("resume", LoadInitState(cp))], **kw)
    resumed.fit(X, Y)
    assert resumed.history_[:, "n_numpy"] == [1, 2, 3]


def test_a_failed_save_raises_or_warns_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    write = callbacks_module._write_durably

    def disk_full_after_epoch_1(path, data):
        if ".epoch-" in str(path) and ".epoch-0001-" not in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(path, data)

    monkeypatch.setattr(callbacks_module, "_write_durably", disk_full_after_epoch_1)
    with pytest.raises(OSError, match="checkpoint of epoch 2 .*No space left"):
        make("CCClassifier", tmp_path / "a", max_epochs=3).fit(X, Y)
    cp = TrainingCheckpoint(str(tmp_path / "b"), on_error="warn")
    clf = make("CCClassifier", max_epochs=3, callbacks=[("cp", cp)])
    with pytest.warns(RuntimeWarning, match="last complete checkpoint is kept") as caught:
        clf.fit(X, Y)
    assert ["epoch 2" in str(w.message) for w in caught] == [True, False]
    assert len(clf.history_) == 3
    for folder in ("a", "b"):
        manifest, files = current(tmp_path / folder)
        assert manifest["epoch"] == 1 and files.name.startswith("epoch-0001-")
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == [
            "checkpoint.json", files.name]


def test_a_pickled_fit_continues_like_an_uninterrupted_one():
    kw = {**COMMON, **PARAMS["CCClassifier"]}
    first = CCClassifier(max_epochs=4, keep_training_state=True, warm_start=True, **kw)
    again = pickle.loads(pickle.dumps(first.fit(X, Y))).set_params(max_epochs=8).fit(X, Y)
    np.testing.assert_array_equal(again.predict_proba(X),
                                  CCClassifier(max_epochs=8, **kw).fit(X, Y).predict_proba(X))
    # a pickle for serving carries no generator state
    assert "_random_states" not in vars(pickle.loads(pickle.dumps(
        CCClassifier(max_epochs=1, **kw).fit(X, Y))))
