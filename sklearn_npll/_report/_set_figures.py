"""Figures of the candidate sets and of the teacher's confidence."""

import numpy as np

from ._plot import GOOD, NEUTRAL, STUDENT, TEACHER, class_label_size, new_figure, tidy


def set_size_figure(candidates):
    """Bar chart: how many images have a candidate set of each size."""
    sizes = candidates.sum(1).astype(int)
    values = np.arange(1, max(int(sizes.max()), 1) + 1)
    counts = np.array([(sizes == v).sum() for v in values])
    fig = new_figure(5.2, 3.0)
    ax = fig.add_subplot()
    colors = [GOOD if v == 1 else STUDENT for v in values]
    bars = ax.bar(values, counts, color=colors, width=0.75)
    ax.bar_label(bars, labels=[str(c) if c else "" for c in counts], fontsize=8,
                 color="#3d444d", padding=2)
    ax.set(xlabel="classes in the candidate set", ylabel="images", xticks=values)
    ax.margins(y=0.12)
    tidy(ax)
    return fig


def class_count_figure(candidates, names):
    """Stacked bars per class: sets where it is the only candidate, and sets
    where it is one of several."""
    single = candidates.sum(1) == 1
    alone = candidates[single].sum(0)
    shared = candidates[~single].sum(0)
    x = np.arange(len(names))
    fig = new_figure(max(5.2, 0.32 * len(names) + 1.5), 3.2)
    ax = fig.add_subplot()
    ax.bar(x, alone, color=GOOD, width=0.75, label="only candidate")
    ax.bar(x, shared, bottom=alone, color=STUDENT, alpha=0.55, width=0.75,
           label="one of several")
    ax.set_xticks(x, names, rotation=45 if len(names) > 5 else 0,
                  ha="right" if len(names) > 5 else "center",
                  fontsize=class_label_size(len(names)))
    ax.set(ylabel="candidate sets holding the class")
    ax.legend(frameon=False, fontsize=8, loc="upper right")
    ax.margins(y=0.15)
    tidy(ax)
    return fig


def teacher_confidence_figure(teacher_proba, candidates=None):
    """Histogram of the teacher's top probability, stacked by whether the
    image's candidate set holds one class or several."""
    top = teacher_proba.max(1)
    bins = np.linspace(0, 1, 21)
    fig = new_figure(5.2, 3.0)
    ax = fig.add_subplot()
    if candidates is not None:
        single = candidates.sum(1) == 1
        ax.hist([top[single], top[~single]], bins=bins, stacked=True, color=[GOOD, TEACHER],
                label=["set of one class", "set of several"], rwidth=0.9)
        ax.legend(frameon=False, fontsize=8, loc="best")
    else:
        ax.hist(top, bins=bins, color=TEACHER, rwidth=0.9)
    chance = 1 / teacher_proba.shape[1]
    ax.axvline(chance, color=NEUTRAL, ls=":", lw=1.2)
    ax.annotate("chance", (chance, 1), xycoords=("data", "axes fraction"), fontsize=8,
                color=NEUTRAL, xytext=(3, -10), textcoords="offset points")
    ax.set(xlabel="teacher's probability of its top class", ylabel="images", xlim=(0, 1))
    tidy(ax)
    return fig
