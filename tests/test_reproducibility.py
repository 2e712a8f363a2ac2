"""Same seed, same model: across processes on the CPU, whatever the OpenMP
runtime's dynamic adjustment; the thread count of a fit is recorded."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from threadpoolctl import ThreadpoolController

from sklearn_npll import CoRegClassifier, make_partial_labels

ROOT = Path(__file__).resolve().parents[1]


def _data(n=300, d=32, n_classes=4):
    rng = np.random.RandomState(0)
    centers = rng.normal(size=(n_classes, d))
    y = rng.randint(n_classes, size=n + 100)
    X = (0.3 * centers[y] + rng.normal(size=(n + 100, d))).astype(np.float32)
    Y = make_partial_labels(y[:n], 0.2, 0.2, n_classes=n_classes, random_state=0)
    return X[:n], Y, X[n:]


def _estimator(**params):
    # batch 64 is enough for 1 and 2 threads to give other models
    return CoRegClassifier(max_epochs=2, warmup_epochs=1, start_contrastive=0,
                           batch_size=64, queue_size=256, random_state=0, device="cpu",
                           **params)


# One fit on 2 threads in a fresh process; ONE_CPU pins the process to one CPU
# first (the CPUs that libgomp's dynamic adjustment counts).
CHILD = textwrap.dedent("""
    import json, os, sys
    if os.environ.get("ONE_CPU"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import numpy as np, torch
    torch.set_num_threads(2)
    sys.path.insert(0, sys.argv[2])
    from test_reproducibility import _data, _estimator
    X, Y, X_test = _data()
    clf = _estimator().fit(X, Y)
    np.save(sys.argv[1], clf.predict_proba(X_test))
    print(json.dumps({"n_threads_": getattr(clf, "n_threads_", None)}))
""")

CHILDREN = {
    "a": {"PYTHONHASHSEED": "1"},
    "b": {"PYTHONHASHSEED": "2"},
    # dynamic adjustment on, one CPU: libgomp would run 1 thread, not 2
    "dynamic": {"PYTHONHASHSEED": "3", "OMP_DYNAMIC": "true", "ONE_CPU": "1"},
}


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    """The same fit in three fresh processes at once: {name: (proba, n_threads_)}."""
    tmp = tmp_path_factory.mktemp("children")
    procs = {}
    for name, extra in CHILDREN.items():
        if "ONE_CPU" in extra and not hasattr(os, "sched_setaffinity"):
            continue
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_DYNAMIC": "false", **extra}
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp / f"{name}.npy"), str(ROOT / "tests")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"child {name} failed:\n{stderr[-3000:]}"
        meta = json.loads(stdout.strip().splitlines()[-1])
        out[name] = (np.load(tmp / f"{name}.npy"), meta["n_threads_"])
    return out


def test_same_seed_same_model_in_two_processes(children):
    (proba_a, threads_a), (proba_b, threads_b) = children["a"], children["b"]
    assert proba_a.tobytes() == proba_b.tobytes(), (
        f"max |difference| {np.abs(proba_a - proba_b).max()}")
    assert threads_a == threads_b == 2


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")
def test_dynamic_thread_adjustment_changes_nothing(children):
    (proba_a, _), (proba_dyn, threads_dyn) = children["a"], children["dynamic"]
    assert proba_a.tobytes() == proba_dyn.tobytes(), (
        f"max |difference| {np.abs(proba_a - proba_dyn).max()}")
    assert threads_dyn == 2


def _dynamic_flags():
    return [lib.dynlib.omp_get_dynamic()
            for lib in ThreadpoolController().select(user_api="openmp").lib_controllers]


@pytest.fixture
def one_thread_dynamic():
    """torch on 1 thread and every OpenMP runtime's dynamic adjustment on,
    for this test only."""
    threads = torch.get_num_threads()
    libs = ThreadpoolController().select(user_api="openmp").lib_controllers
    flags = [lib.dynlib.omp_get_dynamic() for lib in libs]
    torch.set_num_threads(1)
    for lib in libs:
        lib.dynlib.omp_set_dynamic(1)
    yield
    torch.set_num_threads(threads)
    for lib, flag in zip(libs, flags):
        lib.dynlib.omp_set_dynamic(flag)


def test_fit_records_threads_and_holds_them(one_thread_dynamic, tmp_path):
    from skorch.callbacks import Callback

    class DynamicFlags(Callback):
        def on_epoch_begin(self, net, **kwargs):
            net.history.record("dynamic", _dynamic_flags())

    X, Y, _ = _data(n=120)
    clf = _estimator(callbacks=[("flags", DynamicFlags())]).fit(X, Y)
    assert clf.n_threads_ == 1
    assert all(flag == 0 for row in clf.history[:, "dynamic"] for flag in row)
    assert all(flag == 1 for flag in _dynamic_flags())  # restored after the fit
    clf.save_params(f_params=tmp_path / "a.pt", f_module2=tmp_path / "b.pt",
                    f_fitted=tmp_path / "fitted.json")
    fresh = _estimator()
    fresh.load_params(f_params=tmp_path / "a.pt", f_module2=tmp_path / "b.pt",
                      f_fitted=tmp_path / "fitted.json")
    assert fresh.n_threads_ == 1


def test_partial_fit_records_threads(one_thread_dynamic):
    X, Y, _ = _data(n=120)
    clf = _estimator().partial_fit(X, Y)
    assert clf.n_threads_ == 1


def test_the_table_of_reproducibility_cases_is_current(children):
    from _table import check_section

    def same(name):
        proba, threads = children[name]
        equal = proba.tobytes() == children["a"][0].tobytes()
        return (f"{'identical' if equal else 'different'} probabilities "
                f"(max difference {np.abs(proba - children['a'][0]).max():.1e}); "
                f"n_threads_ {threads}")

    rows = [("Co-Reg, same seed, two fresh processes (hash seeds 1 and 2), 2 threads",
             same("b"))]
    if "dynamic" in children:
        rows.append(("the same fit with OMP_DYNAMIC=true, pinned to one CPU",
                     same("dynamic")))
    check_section("reproducibility", rows)
