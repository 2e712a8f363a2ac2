"""Figures of the result: where the student (the trained classifier) and the
teacher (the vision-language model) agree, and how confident the student is."""

import numpy as np

from ._plot import GOOD, NEUTRAL, STUDENT, TEACHER, class_label_size, new_figure, tidy


def disagreement_matrix(teacher_pred, student_pred, n_classes):
    """Counts ``M[t, s]`` of images the teacher puts in class t and the
    student in class s (row: teacher, column: student)."""
    matrix = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(matrix, (np.asarray(teacher_pred), np.asarray(student_pred)), 1)
    return matrix


def agreement_by_class(matrix):
    """Per teacher class: (images the student also puts there, images)."""
    return np.diag(matrix).copy(), matrix.sum(1)


def agreement_figure(matrix, names):
    """Bars: for each class of the teacher, the share of its images that
    the student puts in the same class."""
    agree, total = agreement_by_class(matrix)
    share = np.where(total > 0, agree / np.maximum(total, 1), np.nan)
    x = np.arange(len(names))
    fig = new_figure(max(5.2, 0.32 * len(names) + 1.5), 3.2)
    ax = fig.add_subplot()
    bars = ax.bar(x, np.nan_to_num(share), color=STUDENT, width=0.75)
    if len(names) <= 20:
        labels = [f"{a}/{t}" if t else "none" for a, t in zip(agree, total)]
        ax.bar_label(bars, labels=labels, fontsize=7, color="#3d444d", padding=2)
    overall = agree.sum() / max(total.sum(), 1)
    ax.axhline(overall, color=TEACHER, ls="--", lw=1.2, label=f"all images: {overall:.0%}")
    ax.legend(frameon=False, fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0))
    ax.set_xticks(x, names, rotation=45 if len(names) > 5 else 0,
                  ha="right" if len(names) > 5 else "center",
                  fontsize=class_label_size(len(names)))
    ax.set(ylabel="student agrees", ylim=(0, 1.15), xlabel="teacher's class")
    ax.yaxis.set_major_formatter("{x:.0%}")
    tidy(ax)
    return fig


def disagreement_figure(matrix, names):
    """Heat map of ``matrix`` (rows: teacher's class, columns: student's)
    with the diagonal, where they agree, greyed out."""
    from matplotlib.colors import ListedColormap
    from matplotlib.ticker import MaxNLocator

    n = len(names)
    diagonal = np.eye(n, dtype=bool)
    # white where none differ, grey on the diagonal, colour for disagreements
    off = np.ma.masked_array(matrix.astype(float), mask=diagonal | (matrix == 0))
    side = min(max(4.2, 0.3 * n + 2.0), 9.0)
    fig = new_figure(side + 1.0, side, layout="compressed")
    ax = fig.add_subplot()
    vmax = max(int(off.max()) if off.count() else 0, 1)
    ax.imshow(np.ma.masked_array(np.ones((n, n)), mask=~diagonal), interpolation="nearest",
              cmap=ListedColormap(["#e6e9ed"]))
    image = ax.imshow(off, cmap="OrRd", vmin=0, vmax=vmax, interpolation="nearest")
    if n <= 15:
        for (t, s), count in np.ndenumerate(matrix):
            if t == s:
                ax.text(s, t, str(count), ha="center", va="center", fontsize=8, color=NEUTRAL)
            elif count:
                ax.text(s, t, str(count), ha="center", va="center", fontsize=8.5,
                        fontweight="bold", color="white" if count > 0.6 * vmax else "#24292f")
    size = class_label_size(n)
    ax.set_xticks(np.arange(n), names, rotation=45 if n > 4 else 0,
                  ha="right" if n > 4 else "center", fontsize=size)
    ax.set_yticks(np.arange(n), names, fontsize=size)
    ax.set_xlabel("student's class", color="#3d444d")
    ax.set_ylabel("teacher's class", color="#3d444d")
    for spine in ax.spines.values():
        spine.set_visible(False)
    bar = fig.colorbar(image, ax=ax, shrink=0.8, label="images where they differ")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    return fig


def confidence_figure(student_proba, agree=None):
    """Histogram of the student's top probability, stacked by agreement with
    the teacher when known."""
    top = student_proba.max(1)
    bins = np.linspace(0, 1, 21)
    fig = new_figure(5.2, 3.0)
    ax = fig.add_subplot()
    if agree is not None:
        ax.hist([top[agree], top[~agree]], bins=bins, stacked=True, rwidth=0.9,
                color=[GOOD, TEACHER], label=["agrees with the teacher", "disagrees"])
        ax.legend(frameon=False, fontsize=8, loc="upper left")
    else:
        ax.hist(top, bins=bins, color=STUDENT, rwidth=0.9)
    ax.set(xlabel="student's probability of its class", ylabel="images", xlim=(0, 1))
    tidy(ax)
    return fig
