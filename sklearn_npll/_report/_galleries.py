"""Thumbnail grids: the student's most confident images per class, and the
disputed images."""

import numpy as np

from ._page import Gallery, Note, Section, Tile
from ._thumbnails import thumbnails


def most_confident(student_proba, per_class):
    """Per class, the indices of the (up to) ``per_class`` images predicted
    as that class with the highest probability, most confident first."""
    pred, top = student_proba.argmax(1), student_proba.max(1)
    groups = []
    for c in range(student_proba.shape[1]):
        rows = np.flatnonzero(pred == c)
        groups.append(rows[np.argsort(-top[rows], kind="stable")][:per_class])
    return groups


def disputed(data, limit):
    """Indices of the disputed images, most confident student first, and
    what "disputed" means here (None when nothing defines it)."""
    pred, top = data.student_pred, data.student_proba.max(1)
    if data.teacher_proba is not None:
        rows, meaning = np.flatnonzero(pred != data.teacher_pred), "teacher"
    elif data.candidates is not None:
        rows = np.flatnonzero(data.candidates[np.arange(data.n), pred] == 0)
        meaning = "candidates"
    else:
        return None, None
    return rows[np.argsort(-top[rows], kind="stable")][:limit], meaning


def gallery_section(data, per_class=6, n_disputed=30, size=128):
    """The section of thumbnail grids, or notes saying why it is empty."""
    section = Section("images", "Images to look at", (
        "Each thumbnail shows the student's class and probability, the teacher's, and the "
        "candidate set. An orange frame marks a disputed image."))
    groups = most_confident(data.student_proba, per_class)
    picks, meaning = disputed(data, n_disputed)
    wanted = np.concatenate([*groups, picks if picks is not None else []]).astype(int)
    thumbs = thumbnails(data.images, np.unique(wanted), size=size)
    if thumbs is None:
        section.items.append(Note("No thumbnails: the inputs are feature vectors, not "
                                  "images."))
        return section
    counts = np.bincount(data.student_pred, minlength=data.n_classes)
    empty = [name for name, count in zip(data.names, counts) if count == 0]
    section.items.append(Gallery("The student's most confident images, per class", (
        "For each class, the images the student is surest about. If these look wrong, "
        "the class itself has been learned wrongly."),
        [(f"{name} ({len(rows)} shown of {counts[c]})",
          [_tile(data, i, thumbs[i], meaning) for i in rows])
         for c, (name, rows) in enumerate(zip(data.names, groups)) if counts[c]],
        footnote=f"The student puts no image in: {', '.join(empty)}." if empty else None))
    section.items.append(_disputed_item(data, picks, meaning, thumbs))
    return section


def _disputed_item(data, picks, meaning, thumbs):
    if meaning is None:
        return Note("The disputed images are left out: there is neither a teacher nor "
                    "candidate sets to dispute the student's classes.")
    if len(picks) == 0:
        return Note("Nothing is disputed: the student agrees with the "
                    + ("teacher on every image." if meaning == "teacher"
                       else "candidate sets on every image."))
    caption = ("Images where the student and the teacher disagree, the student's surest "
               "first. Check these by hand: each is a teacher's mistake the student "
               "fixed, or a mistake of the student's."
               if meaning == "teacher" else
               "Images whose predicted class is not in their candidate set (no teacher "
               "probabilities were given), the student's surest first: the student "
               "overrules the set.")
    total = int((data.student_pred != data.teacher_pred).sum() if meaning == "teacher" else
                (data.candidates[np.arange(data.n), data.student_pred] == 0).sum())
    return Gallery(f"Disputed images ({len(picks)} shown of {total})", caption,
                   [(None, [_tile(data, i, thumbs[i], meaning) for i in picks])])


def _tile(data, i, thumb, meaning):
    names, s = data.names, int(data.student_pred[i])
    teacher = None
    if data.teacher_proba is not None:
        t = int(data.teacher_pred[i])
        teacher = f"{names[t]} {data.teacher_proba[i, t]:.2f}"
    candidates = None
    if data.candidates is not None:
        members = [names[c] for c in np.flatnonzero(data.candidates[i])]
        shown = members if len(members) <= 4 else [*members[:3], f"+{len(members) - 3}"]
        candidates = "{" + ", ".join(shown) + "}"
    if meaning == "teacher":
        flag = s != data.teacher_pred[i]
    else:
        flag = meaning == "candidates" and data.candidates[i, s] == 0
    return Tile(src=thumb.src, name=thumb.name, title=thumb.title, student=f"{names[s]} "
                f"{data.student_proba[i, s]:.2f}", teacher=teacher, candidates=candidates,
                disputed=bool(flag), pixelated=thumb.pixelated)
