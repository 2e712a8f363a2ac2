"""What the user points the program to: class names, photo files and
folders, and a CSV of labels a person checked."""

import csv
import os
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .._data.reader import ImageReadError, read_header, read_image
from .console import CLIError, listed, say

__all__ = ["IMAGE_EXTENSIONS", "Photos", "read_classes", "find_images", "check_images",
           "read_verified"]

#: The readable images (paths, (height, width) sizes, PIL modes) and the
#: unreadable files left out.
Photos = namedtuple("Photos", ["paths", "sizes", "modes", "skipped"])

#: File name endings read as images (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def read_classes(classes=None, classes_file=None):
    """The class names from ``--classes a,b,c`` or ``--classes-file``.

    Parameters
    ----------
    classes : str or None
        Comma-separated names.
    classes_file : str or None
        A text file with one name per line (empty lines and lines starting
        with ``#`` are skipped).

    Returns
    -------
    names : list of str

    Raises
    ------
    CLIError
        A missing file, fewer than two names, or a name given twice.
    """
    if classes_file is not None:
        path = Path(classes_file)
        if not path.is_file():
            raise CLIError(f"The class file {classes_file} does not exist (or is not a "
                           "file); give a text file with one class name per line.")
        lines = path.read_text(encoding="utf-8").splitlines()
        names = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        where = f"the class file {classes_file}"
    else:
        names = [name.strip() for name in classes.split(",") if name.strip()]
        where = "--classes"
    if len(names) < 2:
        raise CLIError(f"{where} names {len(names)} class(es); give at least two.")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise CLIError(f"{where} names these classes more than once: {listed(twice)}.")
    return names


def _is_image_name(path):
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def find_images(sources, *, what="PHOTOS"):
    """The image files among ``sources`` (files, and folders searched
    recursively), sorted within each folder.

    Parameters
    ----------
    sources : list of str
        Files and folders.
    what : str
        How the sources are named in errors.

    Returns
    -------
    paths : list of pathlib.Path

    Raises
    ------
    CLIError
        A source that does not exist, or no image file at all.
    """
    paths = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            paths += sorted(p for p in source.rglob("*") if p.is_file() and _is_image_name(p))
        elif source.is_file():
            paths.append(source)
        else:
            raise CLIError(f"{what}: {source} does not exist.")
    if not paths:
        raise CLIError(
            f"{what}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in "
            f"{listed(sources)}; the folder is empty or holds other files.")
    return paths


def _probe(path):
    """``(((height, width), mode), None)`` when ``path`` reads as the library
    reads images (upright size, JPEGs decoded at a reduced scale), else
    ``(None, reason)``."""
    try:
        found = read_header(path)
        read_image(path, draft=(64, 64), warn_bomb=False)  # the header warned
        return found, None
    except ImageReadError as exc:
        return None, str(exc)


def check_images(paths, on_bad_image="error", n_jobs=None):
    """Open every image file; report those that cannot be read, together.

    Parameters
    ----------
    paths : list of pathlib.Path
    on_bad_image : {"error", "skip"}
        Raise one error listing every unreadable file, or leave them out
        (listed in a message).
    n_jobs : int or None
        Reading threads; None: one per core, up to 8.

    Returns
    -------
    photos : Photos
        The readable files (``paths``), their upright ``sizes`` (height,
        width) and PIL ``modes``, and the unreadable files left out (``skipped``).

    Raises
    ------
    CLIError
        Unreadable files with ``on_bad_image="error"``, or no readable file.
    """
    workers = n_jobs or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(_probe, paths))
    bad = [(str(p), reason) for p, (size, reason) in zip(paths, results) if size is None]
    if bad and on_bad_image == "error":
        shown = "; ".join(f"{p} ({reason})" for p, reason in bad[:10])
        more = f"; and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise CLIError(f"{len(bad)} of {len(paths)} image files cannot be read: {shown}{more}. "
                       "Remove or repair them, or pass --on-bad-image skip to leave them out.")
    if bad:
        say(f"Leaving out {len(bad)} unreadable image file(s): {listed(p for p, _ in bad)}.")
    good = [(p, found) for p, (found, _) in zip(paths, results) if found is not None]
    if not good:
        raise CLIError("None of the image files can be read.")
    return Photos([p for p, _ in good], [f[0] for _, f in good], [f[1] for _, f in good],
                  [p for p, _ in bad])


def read_verified(path, names, classes):
    """The labels a person filled in a CSV (``file`` and ``label`` columns).

    Rows with an empty label are skipped.

    Parameters
    ----------
    path : str
        The CSV file (as written by ``verify``).
    names : list of str
        The training images as the RUN folder names them (relative to the
        photo folder, with ``/``).
    classes : list of str
        The class names.

    Returns
    -------
    labels : dict of int to int
        Training image position -> class position.

    Raises
    ------
    CLIError
        A missing file or column, a label that is not a class, or a file
        that is not a training image.
    """
    if not Path(path).is_file():
        raise CLIError(f"The verified-labels file {path} does not exist.")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"file", "label"} - set(reader.fieldnames or ())
        if missing:
            raise CLIError(f"{path} has no {' or '.join(sorted(missing))} column; it needs "
                           "'file' and 'label' columns (the CSV that verify writes).")
        rows = [(row["file"].strip(), (row["label"] or "").strip()) for row in reader]
    position = {name: i for i, name in enumerate(names)}
    wrong_label = sorted({label for _, label in rows if label and label not in classes})
    unknown = [file for file, label in rows if label and file not in position]
    if wrong_label:
        raise CLIError(f"{path} has labels that are not classes: {listed(wrong_label)} "
                       f"(the classes are {listed(classes)}).")
    if unknown:
        raise CLIError(f"{path} names files that are not among the training images: "
                       f"{listed(unknown)}.")
    return {position[file]: classes.index(label) for file, label in rows if label}
