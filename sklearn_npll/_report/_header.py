"""The report's header: headline numbers, a summary sentence, and what the
data and the model are."""

import inspect
import os

import numpy as np

from ._page import Header

# parameters always shown when the estimator has them, in this order ...
MAIN_PARAMS = ("max_epochs", "warmup_epochs", "batch_size", "lr")
ANNOTATOR_PARAMS = ("model_name", "pretrained", "templates", "mode")
# ... and these when they differ from their default
OPTIONAL_PARAMS = ("k", "ratio", "p_threshold", "class_aware_division", "class_prior",
                   "loss_history", "lambda_u", "validation_fraction", "image_size",
                   "precision", "device", "random_state")

def header(data, title=None):
    """The :class:`Header` of ``data``."""
    agree = covering = set_size = noise = None
    if data.teacher_proba is not None:
        agree = float(np.mean(data.teacher_pred == data.student_pred))
    if data.candidates is not None:
        covering = float(np.mean(data.candidates[np.arange(data.n), data.student_pred] > 0))
        set_size = float(data.candidates.sum(1).mean())
    noise = _last(data.history, "noise_rate")
    stats = [("images", f"{data.n:,}"), ("classes", str(data.n_classes))]
    stats += [(label, value) for label, value in (
        ("agree with the teacher", _percent(agree)),
        ("predicted class in the set", _percent(covering)),
        ("classes per set, on average", None if set_size is None else f"{set_size:.2f}"),
        ("estimated noisy sets", _percent(noise))) if value is not None]
    return Header(title=title or f"{type(data.student).__name__} on {data.n:,} images",
                  stats=stats, summary=_summary(data, agree, covering, set_size, noise),
                  facts=_facts(data))


def _percent(value):
    return None if value is None else f"{value:.0%}"


def _last(history, key):
    for row in reversed(history):
        value = row.get(key)
        if isinstance(value, (int, float, np.number)) and np.isfinite(value):
            return float(value)
    return None


def _summary(data, agree, covering, set_size, noise):
    parts = []
    if agree is not None:
        parts.append(f"The student agrees with the teacher on {agree:.0%} of the "
                     f"{data.n:,} images ({int(round(agree * data.n)):,} of them)")
    else:
        parts.append(f"The student classified {data.n:,} images (no teacher to compare "
                     "with)")
    if covering is not None:
        parts.append(f"its class is in the candidate set for {covering:.0%}, and the sets "
                     f"hold {set_size:.2f} classes on average")
    if noise is not None:
        parts.append(f"the last split estimates {noise:.0%} of the sets as noisy")
    counts = np.bincount(data.student_pred, minlength=data.n_classes)
    never = [name for name, count in zip(data.names, counts) if count == 0]
    text = "; ".join(parts) + "."
    if never:
        text += (f" It predicts no image as {len(never)} of the {data.n_classes} classes "
                 f"({', '.join(never[:10])}{', ...' if len(never) > 10 else ''}): see "
                 "the trusted share below.")
    return text


def _facts(data):
    names = data.names
    shown = ", ".join(names if len(names) <= 30 else [*names[:30], f"... ({len(names)})"])
    facts = [("Data", f"{data.n:,} images; {data.n_classes} classes: {shown}")]
    if data.teacher is not None:
        facts.append(("Teacher", _describe(data.teacher, ANNOTATOR_PARAMS)))
    elif data.teacher_proba is not None:
        facts.append(("Teacher", "probabilities given to the report"))
    facts.append(("Student", _describe(data.student, MAIN_PARAMS)))
    history = data.history
    if history:
        seconds = sum(float(row.get("dur", 0) or 0) for row in history)
        facts.append(("Training", f"{len(history)} epochs in {seconds:,.0f} s"))
    return facts


def _describe(estimator, keys):
    """``Name(param=value, ...)``: ``keys`` and the non-default optional ones."""
    params = estimator.get_params(deep=False)
    defaults = {name: p.default for name, p in
                inspect.signature(type(estimator).__init__).parameters.items()}
    shown = [k for k in keys if k in params]
    shown += [k for k in OPTIONAL_PARAMS if k in params
              and not _same(params[k], defaults.get(k, inspect.Parameter.empty))]
    parts = [f"{k}={_short(params[k])}" for k in shown]
    module = params.get("module")
    if module is not None:
        parts.insert(0, f"module={getattr(module, '__name__', type(module).__name__)}")
    size = getattr(estimator, "image_size_", None)
    if size is not None:
        parts.append(f"trained on {size[0]}x{size[1]} px")
    return f"{type(estimator).__name__}(" + ", ".join(parts) + ")"


def _same(value, default):
    try:
        return bool(value == default)
    except (TypeError, ValueError):  # arrays
        return False


def _short(value):
    if isinstance(value, (str, os.PathLike)) and os.sep in os.fspath(value):
        return repr(os.path.basename(os.fspath(value)))
    if isinstance(value, (list, tuple)) and len(value) > 3:
        return f"[{len(value)} items]"
    return repr(value)
