"""The figure sections of the report: candidate sets, training, result.

Each builder returns a :class:`Section` whose items are figures with a
caption saying how to read them, or notes saying what was left out and why.
"""

import numpy as np

from . import _result_figures as result
from . import _set_figures as sets
from . import _training_figures as training
from ._page import FigureItem, Note, Section, Table
from ._plot import css_width, to_data_uri

NO_TEACHER = ("no teacher probabilities were given. Pass teacher_proba=, or report a "
              "Pipeline whose first step is a VLMPartialAnnotator")


def _figure(title, caption, fig, **kwargs):
    return FigureItem(title=title, caption=caption, src=to_data_uri(fig),
                      width=css_width(fig), **kwargs)


def candidate_section(data):
    """Set sizes, classes in the sets and the teacher's confidence."""
    section = Section("candidate-sets", "Candidate sets", (
        "The teacher proposed a set of possible classes for every image, and the student "
        "learned from these sets alone. A set of one class is as good as a label (when "
        "it is right); a large set leaves the student more to work out."))
    Y = data.candidates
    if Y is None:
        section.items.append(Note(
            "The candidate sets are left out: none were given. Pass candidates= (the y "
            "the classifier was fitted on), or report a Pipeline with an annotator."))
    else:
        section.items += [
            _figure("Size of the candidate sets", (
                "Each bar counts the images whose candidate set holds that many classes. "
                "Green: sets of a single class. Many large sets mean the teacher was "
                "often unsure."), sets.set_size_figure(Y)),
            _figure("Classes in the candidate sets", (
                "For each class, how many candidate sets hold it: green where it is the "
                "only candidate, blue where it shares the set with others. A class that "
                "is rarely proposed is hard to learn; one that is in almost every set "
                "tells the student little."), sets.class_count_figure(Y, data.names),
                wide=data.n_classes > 12)]
    if data.teacher_proba is None:
        section.items.append(Note(f"The teacher's confidence is left out: {NO_TEACHER}."))
    else:
        section.items.append(_figure("Teacher's confidence", (
            "How sure the teacher was: the probability it gave its top class, image by "
            "image. Far right: sure; near the dotted line (1 / number of classes) it was "
            "guessing. Green: images whose set holds a single class."),
            sets.teacher_confidence_figure(data.teacher_proba, Y)))
    return section


def training_section(data):
    """Loss terms, the trusted share per class and the covering rates."""
    history, student = data.history, data.student
    name = type(student).__name__
    warmup = getattr(student, "warmup_epochs", None)
    section = Section("training", "Training", _training_intro(name, len(history), warmup))
    if not history:
        section.items.append(Note("The training is left out: the classifier has no "
                                  "history of epochs."))
        return section
    section.items.append(_figure("Loss terms by epoch", (
        "Each line is one term of the training loss, averaged over an epoch, on a log "
        "scale. Lines should fall, then level off; a line that climbs or jumps suggests "
        "a lower learning rate, one still falling at the end more epochs. In warm-up each "
        "network learns from the sets on its own; after it, the trusted and the "
        "unlabeled split each have their own term."),
        training.loss_figure(history, warmup), wide=True))
    section.items.append(_trusted_item(data, name, warmup))
    section.items.append(_covering_item(data, name, warmup))
    return section


def _training_intro(name, n_epochs, warmup):
    if not n_epochs:
        return f"{name} keeps no record of training epochs."
    text = f"{name} trained for {n_epochs} epoch{'s' * (n_epochs != 1)}"
    if warmup:
        w = min(warmup, n_epochs)
        text += f": {w} of warm-up, then {n_epochs - w} of co-training"
    return text + "."


def _trusted_item(data, name, warmup):
    history = data.history
    keys = ("n_trusted_per_class_a", "n_trusted_per_class_b")
    if not hasattr(data.student, "trust_"):
        return Note(f"The trusted split is left out: {name} does not divide the images "
                    "into a trusted and an unlabeled split (CoRegClassifier does).")
    if not training.has_any(history, keys):
        return Note("The trusted split is left out: the history holds no per-class trusted "
                    "counts (the model trained through warm-up only, or with an older "
                    "version of the library).")
    sizes, basis = _class_sizes(data)
    return _figure("Trusted share of each class, epoch by epoch", (
        "After warm-up, each network splits the images every epoch into a trusted split "
        "(sets it believes hold the right class) and an unlabeled split, for its partner "
        f"to learn from. Each cell is the share of a class's images that were trusted "
        f"({basis}; grey: no split that epoch). A row that turns pale is a class the "
        "networks stop trusting: its partner then hardly learns it, and it may vanish "
        "from the predictions."),
        training.trusted_figure(history, sizes, data.names), wide=True)


def _class_sizes(data):
    """Images per class, and how they were counted: from the candidate sets
    (a set of k classes gives each 1/k), else from the student's final label
    distribution."""
    if data.candidates is not None:
        Y = data.candidates.astype(float)
        return ((Y / Y.sum(1, keepdims=True)).sum(0),
                "a class's images: those whose set holds it, a set of k classes counting 1/k")
    dist = getattr(data.student, "label_distribution_", None)
    labels = data.student_pred if dist is None else np.asarray(dist).argmax(1)
    return (np.bincount(labels, minlength=data.n_classes),
            "a class's images: those the student gives it at the end")


def _covering_item(data, name, warmup):
    keys = ("covering_rate_a", "covering_rate_b", "valid_covering_rate")
    if not training.has_any(data.history, keys):
        return Note(f"The covering rate by epoch is left out: {name} records it only with "
                    "validation_fraction set.")
    held_out = training.has_any(data.history, ["valid_covering_rate"])
    return _figure("Covering rate by epoch", (
        "The covering rate is the share of images whose predicted class is in their "
        "candidate set: how well the networks fit the sets. Blue and purple: each "
        "network's predictions on the training images when it splits them; "
        + ("orange: held-out images (validation_fraction). " if held_out else
           "set validation_fraction to follow held-out images too. ")
        + "Dashed green: the share of images trusted. A training rate near 100% while "
        "the held-out rate lags can mean the networks memorise noisy sets."),
        training.covering_figure(data.history, warmup), wide=True)


def result_section(data):
    """Agreement with the teacher per class, the disagreement matrix and the
    student's confidence."""
    section = Section("result", "Result", (
        "The student is the trained classifier; the teacher is the vision-language "
        "model, whose top class is its own guess. Where they differ one of them is "
        "wrong, so these images are the ones most worth checking by hand."))
    agree = None
    if data.teacher_proba is None:
        section.items.append(Note(f"The agreement with the teacher is left out: "
                                  f"{NO_TEACHER}."))
    else:
        matrix = result.disagreement_matrix(data.teacher_pred, data.student_pred,
                                            data.n_classes)
        agree = data.teacher_pred == data.student_pred
        section.items += [
            _figure("Agreement with the teacher, per class", (
                "For each class the teacher chose, the share of those images the student "
                "puts in the same class (agreeing / all above the bars). The dashed line "
                "is the share over all images. A low bar is a class the student learned "
                "differently from the teacher, for better or worse."),
                result.agreement_figure(matrix, data.names), wide=data.n_classes > 12),
            _figure("Where student and teacher disagree", (
                "Rows: the teacher's class; columns: the student's. A coloured cell counts "
                "the images the teacher puts in its row's class and the student in its "
                "column's; darker is more. Grey cells on the diagonal are where they agree. "
                "A dark cell is a pair of classes the two confuse."),
                result.disagreement_figure(matrix, data.names),
                table=_matrix_table(matrix, data.names), wide=data.n_classes > 12)]
    section.items.append(_figure("Student's confidence", (
        "How sure the student is: its probability for the class it predicts. "
        + ("Green: it agrees with the teacher; orange: it does not. Orange on the right "
           "is where the student confidently overrules the teacher." if agree is not None
           else "Images on the left are the ones it is unsure about.")),
        result.confidence_figure(data.student_proba, agree)))
    return section


def _matrix_table(matrix, names):
    return Table(columns=list(names), row_header="teacher \\ student",
                 rows=[[name, *map(int, row)] for name, row in zip(names, matrix)])
