"""Figures of the training history: loss terms, the trusted split per class,
and covering rates, epoch by epoch."""

import numpy as np

from ._plot import (GOOD, NETWORK_B, NEUTRAL, STUDENT, TEACHER, WIDE, class_label_size,
                    new_figure, tidy)

# history key -> legend label, in drawing order
LOSS_TERMS = {
    "train_loss": "total (train_loss)",
    "loss": "loss",
    "loss_pce": "partial cross-entropy (loss_pce)",
    "loss_ne": "prediction entropy (-loss_ne)",
    "loss_x": "trusted split (loss_x)",
    "loss_u": "unlabeled split (loss_u)",
    "loss_prototype": "prototypes (loss_prototype)",
    "loss_contrastive": "contrastive (loss_contrastive)",
    "valid_loss": "validation (valid_loss)",
}
_COLORS = ["#24292f", "#24292f", "#9a6700", "#bf8700", STUDENT, "#54aeff", NETWORK_B,
           "#cf222e", GOOD]


def column(history, key):
    """The values of ``key`` epoch by epoch, NaN where it was not recorded."""
    return np.array([_number(row.get(key)) for row in history], dtype=float)


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def loss_terms(history):
    """The loss keys of the history, known terms first, each with a label."""
    keys = {k for row in history for k in row}
    known = [(k, label) for k, label in LOSS_TERMS.items() if k in keys]
    other = sorted(k for k in keys if k.startswith("loss_") and k not in LOSS_TERMS)
    return known + [(k, k) for k in other]


def loss_figure(history, warmup_epochs=None):
    """Every loss term by epoch on a log scale (negative values are not
    drawn; ``loss_ne``, a negative entropy, is drawn as the entropy)."""
    epochs = column(history, "epoch")
    fig = new_figure(WIDE, 3.4)
    ax = fig.add_subplot()
    for i, (key, label) in enumerate(loss_terms(history)):
        values = column(history, key)
        if key == "loss_ne":
            values = -values
        values = np.where(values > 0, values, np.nan)
        if np.isnan(values).all():
            continue
        color = _COLORS[list(LOSS_TERMS).index(key)] if key in LOSS_TERMS else None
        ax.plot(epochs, values, marker="o", ms=3, lw=1.6, label=label, color=color,
                ls="--" if key in ("train_loss", "valid_loss") else "-")
    _mark_warmup(ax, warmup_epochs, len(history))
    ax.set(xlabel="epoch", ylabel="mean loss (log scale)", yscale="log")
    _epoch_axis(ax, epochs)
    ax.legend(frameon=False, fontsize=7.5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    tidy(ax, grid="both")
    return fig


def _epoch_axis(ax, epochs):
    """Whole epochs on the x axis, over the whole training."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(np.nanmin(epochs) - 0.5, np.nanmax(epochs) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _mark_warmup(ax, warmup_epochs, n_epochs):
    if warmup_epochs and 0 < warmup_epochs < n_epochs:
        ax.axvline(warmup_epochs + 0.5, color=NEUTRAL, ls=":", lw=1.2)
        ax.annotate("end of warm-up", (warmup_epochs + 0.5, 1), xycoords=("data", "axes fraction"),
                    fontsize=8, color=NEUTRAL, xytext=(4, -12), textcoords="offset points")


def trusted_fractions(history, class_sizes):
    """Per network, an (n_classes, n_epochs) array of the share of each
    class's images in the trusted split (NaN in epochs without a division)."""
    out = []
    sizes = np.maximum(np.asarray(class_sizes, dtype=float), 1)
    for key in ("n_trusted_per_class_a", "n_trusted_per_class_b"):
        grid = np.full((len(sizes), len(history)), np.nan)
        for j, row in enumerate(history):
            counts = row.get(key)
            if counts is not None and len(counts) == len(sizes):
                grid[:, j] = np.minimum(np.asarray(counts, dtype=float) / sizes, 1)
        out.append(grid)
    return out


def trusted_figure(history, class_sizes, names):
    """Heat maps (class by epoch) of the trusted share, network A and B."""
    grids = trusted_fractions(history, class_sizes)
    epochs = column(history, "epoch").astype(int)
    n_classes = len(names)
    height = min(max(2.4, 0.28 * n_classes + 1.3), 12)
    fig = new_figure(WIDE, height)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, grid, network in zip(axes, grids, "AB"):
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="YlGn", vmin=0, vmax=1,
                          aspect="auto", interpolation="nearest")
        ax.set_facecolor("#eef0f2")  # epochs without a division (warm-up)
        ticks = _epoch_ticks(len(epochs))
        ax.set_xticks(ticks, epochs[ticks])
        ax.set_title(f"network {network}'s trusted split", fontsize=9, color="#3d444d")
        ax.set_xlabel("epoch")
        ax.tick_params(labelsize=8)
        if n_classes <= 12 and len(epochs) <= 16:
            _annotate_cells(ax, grid)
    axes[0].set_yticks(np.arange(n_classes), names, fontsize=class_label_size(n_classes))
    fig.colorbar(image, ax=axes, shrink=0.9, label="share of the class trusted")
    return fig


def _epoch_ticks(n_epochs):
    step = max(1, int(np.ceil(n_epochs / 12)))
    return np.arange(0, n_epochs, step)


def _annotate_cells(ax, grid):
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=6.5,
                    color="white" if value > 0.6 else "#24292f")


COVERING_CURVES = {
    "covering_rate_a": ("network A, training images", STUDENT, "-"),
    "covering_rate_b": ("network B, training images", NETWORK_B, "-"),
    "valid_covering_rate": ("validation images", TEACHER, "-"),
}


def covering_figure(history, warmup_epochs=None):
    """Covering rates by epoch, with the share of trusted samples."""
    epochs = column(history, "epoch")
    fig = new_figure(WIDE, 3.0)
    ax = fig.add_subplot()
    for key, (label, color, style) in COVERING_CURVES.items():
        values = column(history, key)
        if not np.isnan(values).all():
            ax.plot(epochs, values, marker="o", ms=3, lw=1.8, color=color, ls=style, label=label)
    trusted = 1 - column(history, "noise_rate")
    if not np.isnan(trusted).all():
        ax.plot(epochs, trusted, lw=1.4, color=GOOD, ls="--",
                label="trusted share (1 - noise_rate)")
    _mark_warmup(ax, warmup_epochs, len(history))
    ax.set(xlabel="epoch", ylabel="share of images", ylim=(0, 1.02))
    _epoch_axis(ax, epochs)
    ax.yaxis.set_major_formatter("{x:.0%}")
    ax.legend(frameon=False, fontsize=7.5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    tidy(ax, grid="both")
    return fig


def has_any(history, keys):
    """Whether any epoch recorded any of ``keys``."""
    return any(row.get(k) is not None and np.all(np.isfinite(_number_or_list(row.get(k))))
               for row in history for k in keys)


def _number_or_list(value):
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return np.array(np.nan)
