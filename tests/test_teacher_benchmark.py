"""The zero-shot teacher of benchmarks/teacher.py and the teacher protocol of
benchmarks/run.py, without running the network (the --smoke runs do that)."""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import run  # noqa: E402
import teacher as T  # noqa: E402


def _teacher(proba, votes):
    proba = np.asarray(proba, dtype=float)
    return T.Teacher(proba, np.asarray(votes), proba[:, None], np.ones(len(proba)), {})


def test_class_map_names_are_imagenet_classes():
    groups = T.class_groups()
    cats = T.imagenet_categories()
    assert len(groups) == 10
    assert cats[groups[0][0]] == "jersey"
    assert [cats[i] for i in groups[T.FASHION_CLASSES.index("Ankle boot")]] == ["cowboy boot"]
    # the garment, not the corgi
    assert cats[groups[T.FASHION_CLASSES.index("Pullover")][1]] == "cardigan"


def test_class_map_errors_say_what_is_wrong():
    bad = {**T.FASHION_TO_IMAGENET, "Trouser": ["trousers"]}
    with pytest.raises(ValueError, match="trousers"):
        T.class_groups(mapping=bad)
    twice = {**T.FASHION_TO_IMAGENET, "Shirt": ["jersey"]}
    with pytest.raises(ValueError, match="two target classes"):
        T.class_groups(mapping=twice)


def test_views():
    x = np.arange(2 * 6 * 6, dtype=np.uint8).reshape(2, 6, 6)
    assert np.array_equal(T.make_view(x, "identity"), x)
    assert np.array_equal(T.make_view(x, "flip"), x[:, :, ::-1])
    assert np.array_equal(T.make_view(x, "crop2"), x[:, 2:4, 2:4])
    padded = T.make_view(x, "pad1+invert")
    assert padded.shape == (2, 8, 8)
    assert padded[0, 0, 0] == 255 and padded[0, 1, 1] == 255 - x[0, 0, 0]
    with pytest.raises(ValueError, match="unknown step"):
        T.make_view(x, "rotate90")
    with pytest.raises(ValueError, match="cannot crop"):
        T.make_view(x, "crop7")


def test_probabilities_sum_or_max_over_mapped_classes():
    groups = [np.array([0, 1]), np.array([2])]
    # one image, one view: mapped logits 0, 0 (class A), log 3 (class B); total
    logits = np.array([[[0.0, 0.0, np.log(3.0), 5.0]]])
    proba, votes, view_proba, mass = T.teacher_from_logits(logits, groups, "sum")
    assert np.allclose(proba, [[2 / 5, 3 / 5]])
    proba, *_ = T.teacher_from_logits(logits, groups, "max")
    assert np.allclose(proba, [[1 / 4, 3 / 4]])
    assert votes.tolist() == [[1]] and np.isclose(mass[0], 5 / np.exp(5.0))
    proba, *_ = T.teacher_from_logits(logits, groups, "sum", temperature=2.0)
    assert np.allclose(proba, [[2 / (2 + np.sqrt(3)), np.sqrt(3) / (2 + np.sqrt(3))]])


def test_candidate_rules():
    t = _teacher([[0.5, 0.3, 0.15, 0.05], [0.9, 0.04, 0.03, 0.03]], [[0, 2], [0, 0]])
    assert T.candidate_sets(t).tolist() == [[1, 0, 1, 0], [1, 0, 0, 0]]
    assert T.candidate_sets(t, "topk", k=2).tolist() == [[1, 1, 0, 0], [1, 1, 0, 0]]
    assert T.candidate_sets(t, "prob_ratio", k=3, ratio=0.5).tolist() == \
        [[1, 1, 0, 0], [1, 0, 0, 0]]
    assert T.candidate_sets(t, "threshold", threshold=0.2).tolist() == \
        [[1, 1, 0, 0], [1, 0, 0, 0]]
    # the top-1 is always kept
    assert T.candidate_sets(t, "threshold", threshold=0.95).sum(1).tolist() == [1, 1]
    with pytest.raises(ValueError, match="unknown rule"):
        T.candidate_sets(t, "top-k")


def test_teacher_stats_coverage_per_rule_and_class():
    t = _teacher([[0.6, 0.4], [0.3, 0.7], [0.55, 0.45]], [[0], [1], [0]])
    stats = T.teacher_stats(t, np.array([0, 0, 1]), ["a", "b"],
                            rules={"multi_prompt": {"rule": "multi_prompt"},
                                   "top2": {"rule": "topk", "k": 2}})
    assert np.isclose(stats["accuracy"], 1 / 3)
    assert np.isclose(stats["rules"]["multi_prompt"]["coverage"], 1 / 3)
    assert stats["rules"]["top2"]["coverage"] == 1.0
    assert stats["per_class"]["a"]["accuracy"] == 0.5
    assert stats["confusion"] == [[1, 1], [1, 0]]


def test_teacher_protocol_cells_and_method_table():
    exp = dict(dataset="fashion-mnist-lite0", protocol="teacher", rules="multi_prompt,top2",
               methods=["teacher-zero-shot", "majority-vote", "coreg", "supervised"],
               seeds=[0])
    names = [run.cell_name(c) for c in run.experiment_cells(exp)]
    assert names == [
        "fashion-mnist-lite0__teacher__multi_prompt__teacher-zero-shot__seed0",
        "fashion-mnist-lite0__teacher__top2__teacher-zero-shot__seed0",
        "fashion-mnist-lite0__teacher__multi_prompt__coreg__seed0",
        "fashion-mnist-lite0__teacher__top2__coreg__seed0",
        "fashion-mnist-lite0__teacher__true-labels__supervised__seed0"]
    panel = dict(exp, protocol="panel", panel="2:2:0.5:1")
    assert not any("teacher-zero-shot" in run.cell_name(c)
                   for c in run.experiment_cells(panel))
    with pytest.raises(ValueError, match="unknown candidate rules"):
        run.parse_rules("multi_prompt,top9")
    # a method reaches the teacher's outputs through CellInputs
    pair = run.TeacherPair(_teacher([[0.2, 0.8]], [[1]]), _teacher([[0.9, 0.1]], [[0]]))
    d = SimpleNamespace(teacher=pair)
    test_pred, train_pred = run.METHOD_TABLE["teacher-zero-shot"].predict(d)
    assert test_pred.tolist() == [0] and train_pred.tolist() == [1]
    assert run.METHOD_TABLE["coreg"].division and not run.METHOD_TABLE["proden"].division
