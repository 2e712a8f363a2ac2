"""The HTML report (sklearn_npll.report): written, self-contained, every
section and figure present, right numbers, and rendered by a real browser."""

import base64
import io
import shutil
import subprocess
import sys
import tempfile
import warnings
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline

from _common import TINY_CLIP_NAME, save_tiny_clip
from sklearn_npll import (CCClassifier, CoRegClassifier, PRODENClassifier,
                          VLMPartialAnnotator, make_partial_labels)
from sklearn_npll._methods.coreg import CoRegTrainer
from sklearn_npll._nn.backbones import SmallCNN
from sklearn_npll.report import write_report

pytest.importorskip("matplotlib")

NAMES = ["red", "green", "blue"]
SECTIONS = ["overview", "candidate-sets", "training", "result", "images"]
ALL_FIGURES = {
    "Size of the candidate sets", "Classes in the candidate sets", "Teacher's confidence",
    "Loss terms by epoch", "Trusted share of each class, epoch by epoch",
    "Covering rate by epoch", "Agreement with the teacher, per class",
    "Where student and teacher disagree", "Student's confidence"}


class Page(HTMLParser):
    """What the tests read from a report: image sources, section ids, notes
    and the tables' cells."""

    def __init__(self, text):
        super().__init__()
        self.images, self.sections, self.notes, self.tables = [], [], [], []
        self._tag = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "section":
            self.sections.append(attrs["id"])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        self._tag = (tag, attrs.get("class"))

    def handle_endtag(self, tag):
        self._tag = None

    def handle_data(self, data):
        if self._tag == ("p", "note"):
            self.notes.append(data)
        elif self._tag is not None and self._tag[0] in ("th", "td"):
            self.tables[-1][-1].append(data)


def _figure_titles(html):
    """Titles of the figures (an <h3> followed by an <img> in a <figure>)."""
    return {unescape(part.split("<h3>", 1)[1].split("</h3>")[0])
            for part in html.split("<figure")[1:]}


def _gallery_titles(html):
    return [unescape(part.split("</h3>")[0])
            for part in html.split('<div class="gallery"><h3>')[1:]]


def _decode(src):
    assert src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")), src[:60]
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    image.load()
    return image


def _check_self_contained(html):
    for scheme in ("http://", "https://", "file://", "src=\"/", "url("):
        assert scheme not in html.lower(), scheme
    assert "<script" not in html and "<link" not in html


def _image_data(n_per_class=30, size=16, seed=0):
    """Images of coloured squares, one colour per class, and noisy sets."""
    rng = np.random.RandomState(seed)
    y = np.arange(3 * n_per_class) % 3
    X = rng.randint(0, 60, (len(y), size, size, 3)).astype(np.uint8)
    for c in range(3):
        X[y == c, size // 4:3 * size // 4, size // 4:3 * size // 4, c] += 180
    Y = make_partial_labels(y, partial_rate=0.3, noise_rate=0.2, random_state=seed)
    return X, y, Y


def _fit(estimator, X, y=None):
    """Fit, ignoring the runtime warnings of tiny data (classes missing
    from a trusted split)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return estimator.fit(X, y)


@pytest.fixture(scope="module")
def coreg():
    X, y, Y = _image_data()
    clf = _fit(CoRegClassifier(SmallCNN, module__in_channels=3, module__width=8,
                               max_epochs=6, warmup_epochs=2, start_contrastive=1,
                               batch_size=16, queue_size=64, proj_dim=8, flip=False,
                               random_state=0), X, Y)
    return clf, X, y, Y


@pytest.fixture(scope="module")
def coreg_report(coreg, tmp_path_factory):
    """The report of the Co-Reg fit with a teacher that agrees with the
    student except on three known images: it says blue (2) for two of the
    student's reds (0), and red for one of the student's greens (1)."""
    clf, X, _, Y = coreg
    student = clf.predict(X).astype(int)
    rows = {c: np.flatnonzero(student == c) for c in range(3)}
    flips = {rows[0][0]: 2, rows[0][1]: 2, rows[1][0]: 0}
    proba, teacher = _teacher(student, flips)
    path = write_report(clf, X, tmp_path_factory.mktemp("report") / "report.html",
                        candidates=Y, teacher_proba=proba, class_names=NAMES, title="Colours")
    return path, student, teacher


def _teacher(student_pred, flips, n_classes=3):
    """Teacher probabilities whose argmax is ``student_pred`` except at the
    rows of ``flips`` (row -> teacher class)."""
    teacher = student_pred.copy()
    for row, cls in flips.items():
        teacher[row] = cls
    proba = np.full((len(teacher), n_classes), 0.1)
    proba[np.arange(len(teacher)), teacher] = 0.8
    return proba, teacher


def test_coreg_history_records_trusted_per_class_and_covering_rate(monkeypatch):
    """The per-class trusted counts and the covering rate of each network's
    division, recorded each Co-Reg epoch, match the division's own split."""
    seen = []
    divide = CoRegTrainer.divide

    def recording(self, epoch, k, net):
        out = divide(self, epoch, k, net)
        rows = self.rows
        Y = self.ctx.Y[torch.as_tensor(rows)].cpu().numpy()
        q = out.aligned[torch.as_tensor(rows)].cpu().numpy()
        labels = (Y * q).argmax(1)
        trusted = np.isin(rows, out.trusted)
        seen.append((epoch, k, np.bincount(labels[trusted], minlength=3).tolist(),
                     float(np.mean(Y[np.arange(len(rows)), out.probs.argmax(1).numpy()] > 0))))
        return out

    monkeypatch.setattr(CoRegTrainer, "divide", recording)
    rng = np.random.RandomState(0)
    y = np.arange(90) % 3
    X = (rng.normal(0, 1, (90, 5)) + 2.5 * np.eye(3, 5)[y]).astype("float32")
    Y = make_partial_labels(y, partial_rate=0.4, noise_rate=0.2, random_state=0)
    clf = CoRegClassifier(max_epochs=5, warmup_epochs=2, batch_size=16, queue_size=64,
                          proj_dim=8, validation_fraction=0.2, random_state=0)
    _fit(clf, X, Y)
    assert len(seen) == 6
    for epoch, k, counts, covering in seen:
        row = clf.history_[epoch]
        assert row[f"n_trusted_per_class_{'ab'[k]}"] == counts
        assert sum(counts) == row[f"n_trusted_{'ab'[k]}"]
        assert row[f"covering_rate_{'ab'[k]}"] == pytest.approx(covering)
    for row in clf.history_[:2]:   # warm-up: no division
        assert "n_trusted_per_class_a" not in row and "covering_rate_b" not in row


def test_report_of_coreg_holds_every_section_and_figure(coreg_report, tmp_path):
    path, student, teacher = coreg_report
    assert path.name == "report.html"
    html = path.read_text(encoding="utf-8")
    _check_self_contained(html)
    page = Page(html)
    assert page.sections == SECTIONS
    assert _figure_titles(html) == ALL_FIGURES
    assert page.notes == []                              # nothing left out
    assert _gallery_titles(html) == ["The student's most confident images, per class",
                                     "Disputed images (3 shown of 3)"]
    figures = [_decode(src) for src in page.images[:len(ALL_FIGURES)]]
    assert all(img.format == "PNG" and img.width > 500 and img.height > 300 for img in figures)
    thumbs = [_decode(src) for src in page.images[len(ALL_FIGURES):]]
    assert len(thumbs) == 3 * 6 + 3 and all(t.size == (16, 16) for t in thumbs)  # not enlarged
    agree = np.mean(teacher == student)
    assert f"<b>{agree:.0%}</b><span>agree with the teacher" in html
    assert "<title>Colours</title>" in html and "6 epochs in" in html


def test_disagreement_matrix_rows_are_the_teacher(coreg_report):
    """Known disagreements land in row = teacher's class, column = student's,
    in the figure and in its table of numbers."""
    from sklearn_npll._report._result_figures import disagreement_figure, disagreement_matrix

    path, student, teacher = coreg_report
    matrix = disagreement_matrix(teacher, student, 3)
    assert matrix[2, 0] == 2 and matrix[0, 1] == 1
    assert matrix.sum() - np.trace(matrix) == 3

    ax = disagreement_figure(matrix, NAMES).axes[0]
    drawn = ax.images[-1].get_array()                  # the counts, over a grey diagonal
    assert drawn[2, 0] == 2 and drawn[0, 1] == 1
    assert drawn.mask[0, 2] and drawn.mask[1, 1]          # zero and agreement: not coloured
    assert ax.get_ylabel() == "teacher's class" and ax.get_xlabel() == "student's class"
    assert [t.get_text() for t in ax.get_yticklabels()] == NAMES

    (table,) = Page(path.read_text()).tables
    assert table[0] == ["teacher \\ student", *NAMES]
    cells = {row[0]: [int(v) for v in row[1:]] for row in table[1:]}
    assert cells["blue"][0] == 2 and cells["red"][1] == 1 and cells["red"][2] == 0
    assert sum(map(sum, cells.values())) == len(student)


@pytest.mark.parametrize("cls", [PRODENClassifier, CCClassifier])
def test_report_without_teacher_division_or_images(cls, tmp_path):
    """Feature vectors, no teacher, no division: those parts are left out,
    each with a line saying why; the rest is drawn."""
    rng = np.random.RandomState(0)
    y = np.arange(60) % 3
    X = (rng.normal(0, 1, (60, 4)) + 2 * np.eye(3, 4)[y]).astype("float32")
    Y = make_partial_labels(y, partial_rate=0.3, noise_rate=0.1, random_state=0)
    clf = cls(max_epochs=3, batch_size=16, random_state=0).fit(X, Y)
    html = write_report(clf, X, tmp_path / "r.html", candidates=Y).read_text()
    _check_self_contained(html)
    page = Page(html)
    assert page.sections == SECTIONS
    assert _figure_titles(html) == {"Size of the candidate sets", "Classes in the candidate sets",
                                    "Loss terms by epoch", "Student's confidence"}
    notes = " ".join(page.notes)
    assert "The teacher's confidence is left out: no teacher probabilities" in notes
    assert f"{cls.__name__} does not divide the images" in notes
    assert "covering rate by epoch is left out" in notes
    assert "agreement with the teacher is left out" in notes
    assert "No thumbnails: the inputs are feature vectors" in notes
    for src in page.images:
        _decode(src)


def test_report_of_any_classifier_flags_the_classes_it_never_predicts(tmp_path):
    """A scikit-learn classifier without history: the training is left out,
    and the classes it never predicts are named in the summary and under
    the thumbnails."""
    X, y, Y = _image_data(n_per_class=4)
    y[:2] = 0                                          # class 0 is the majority
    clf = DummyClassifier().fit(X, y)                  # always predicts class 0
    proba = np.eye(3)[y] * 0.7 + 0.1
    html = write_report(clf, X, tmp_path / "r.html", candidates=Y, teacher_proba=proba,
                        class_names=NAMES).read_text()
    page = Page(html)
    assert page.sections == SECTIONS
    assert page.notes == ["The training is left out: the classifier has no history of epochs."]
    assert "It predicts no image as 2 of the 3 classes (green, blue)" in html
    assert "The student puts no image in: green, blue." in html
    assert "red (6 shown of 12)" in html
    for src in page.images:
        _decode(src)


def test_report_of_a_pipeline_takes_sets_and_teacher_from_the_annotator(tmp_path):
    checkpoint = save_tiny_clip(tmp_path)
    X, _, _ = _image_data(n_per_class=10, size=32, seed=1)
    paths = []
    for i, image in enumerate(X):
        paths.append(str(tmp_path / f"photo_{i:03d}.png"))
        Image.fromarray(image).save(paths[-1])
    pipe = Pipeline([
        ("annotate", VLMPartialAnnotator(["cat", "dog", "car"], model_name=TINY_CLIP_NAME,
                                         pretrained=checkpoint)),
        ("coreg", CoRegClassifier(SmallCNN, module__in_channels=3, module__width=8,
                                  max_epochs=3, warmup_epochs=1, start_contrastive=0,
                                  batch_size=8, queue_size=32, proj_dim=8, random_state=0))])
    _fit(pipe, paths)
    html = write_report(pipe, paths, tmp_path / "r.html").read_text()
    _check_self_contained(html)
    page = Page(html)
    assert page.sections == SECTIONS
    assert _figure_titles(html) == ALL_FIGURES
    assert page.notes == []
    assert "VLMPartialAnnotator(model_name=&#x27;npll-tiny-test&#x27;" in html
    assert "pretrained=&#x27;tiny_clip.pt&#x27;" in html       # no folder in the report
    assert "photo_0" in html                                     # file names under thumbnails
    for src in page.images:
        _decode(src)
    assert "set: {" in html and "teacher: " in html


def test_report_needs_matplotlib(coreg, tmp_path, monkeypatch):
    clf, X, _, Y = coreg
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r'pip install "sklearn-npll\[report\]"'):
        write_report(clf, X, tmp_path / "r.html", candidates=Y)
    assert not (tmp_path / "r.html").exists()


def test_report_errors_name_the_problem(coreg, tmp_path):
    clf, X, _, Y = coreg
    with pytest.raises(ValueError, match="class_names has 2 names but the classifier has 3"):
        write_report(clf, X, tmp_path / "r.html", class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"teacher_proba must have shape \(90, 3\)"):
        write_report(clf, X, tmp_path / "r.html", teacher_proba=np.ones((90, 2)) / 2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(clf, X, tmp_path / "missing" / "r.html")


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


# makes the page report, once loaded, how many of its images decoded
_COUNT_IMAGES = """<script>window.addEventListener("load", () => {
const images = Array.from(document.images);
document.body.dataset.images = images.length;
document.body.dataset.loaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
});</script></body>"""


def _run_chromium(binary, *args):
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars", *args],
            capture_output=True, text=True, timeout=180, check=True)


@pytest.mark.skipif(_chromium() is None, reason="no Chromium binary on PATH (chromium, "
                    "chromium-browser or google-chrome); on Debian: apt-get install chromium")
def test_report_renders_in_chromium(coreg_report, tmp_path):
    report = coreg_report[0]
    html = report.read_text()
    n_images = html.count("<img ")
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", _COUNT_IMAGES))
    dom = _run_chromium(_chromium(), "--virtual-time-budget=10000", "--dump-dom",
                        probe.as_uri()).stdout
    assert f'data-images="{n_images}"' in dom, dom[:300]
    assert f'data-loaded="{n_images}"' in dom                   # every image decoded

    shot = tmp_path / "report.png"
    _run_chromium(_chromium(), "--window-size=1280,3000", f"--screenshot={shot}",
                  report.as_uri())
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 3000)
    pixels = np.asarray(image).reshape(-1, 3)
    assert pixels.std(0).min() > 20                             # not blank
    assert len(np.unique(pixels[::7], axis=0)) > 200            # figures, not flat colour
