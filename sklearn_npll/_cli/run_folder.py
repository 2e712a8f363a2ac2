"""The RUN folder: everything one ``train`` writes, and the fingerprint of
the classes and photos it was made for.

Layout::

    run.json              classes, photo folder, image list and their fingerprints
    training.json         the training's settings; whether it finished
    annotation.npz        the teacher's candidate sets, votes and probabilities
    cache/                the annotator's embedding cache
    checkpoint/           the TrainingCheckpoint of the training in progress
    model.safetensors     the classifier (sklearn_npll.io, loads without pickle)
    model.onnx            its prediction path, with the preprocessing as metadata
    classes.json          the class names, in the order of the outputs
    summary.json, summary.md
    report.html
    verify.csv            written by ``verify``
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .._digest import digest
from .console import CLIError, listed

__all__ = ["RunFolder", "image_names"]

FORMAT = "sklearn_npll.run"


def image_names(paths, photos):
    """Names of ``paths`` relative to the folder ``photos``, with ``/``."""
    photos = Path(photos)
    return [Path(p).relative_to(photos).as_posix() for p in paths]


def _images_digest(names, paths):
    return digest("".join(f"{name}\t{os.path.getsize(p)}\n" for name, p in zip(names, paths)))


def _read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _write_json(path, document):
    temporary = Path(str(path) + ".tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


class RunFolder:
    """The files of one RUN folder.

    Parameters
    ----------
    path : str or path-like
        The folder.
    """

    def __init__(self, path):
        self.path = Path(path)
        for name, file in (("run_json", "run.json"), ("training_json", "training.json"),
                           ("annotation", "annotation.npz"), ("cache", "cache"),
                           ("checkpoint", "checkpoint"), ("model", "model.safetensors"),
                           ("onnx", "model.onnx"), ("classes_json", "classes.json"),
                           ("summary_json", "summary.json"), ("summary_md", "summary.md"),
                           ("report", "report.html"), ("verify_csv", "verify.csv")):
            setattr(self, name, self.path / file)

    # ------------------------------------------------------------ identity
    def claim(self, classes, photos, paths):
        """Make the folder for these classes and photos, or check that it
        was made for them.

        Parameters
        ----------
        classes : list of str
        photos : path-like
            The photo folder.
        paths : list of pathlib.Path
            The training images, inside ``photos``.

        Returns
        -------
        identity : dict
            What ``run.json`` holds.

        Raises
        ------
        CLIError
            The folder was made for other classes or other photos, or is not
            a RUN folder.
        """
        names = image_names(paths, photos)
        identity = {"format": FORMAT, "photos": str(Path(photos).resolve()),
                    "classes": list(classes), "classes_digest": digest(json.dumps(classes)),
                    "images": names, "images_digest": _images_digest(names, paths)}
        if self.run_json.exists():
            self._check_same(self._read_identity(), identity)
        elif self.path.exists() and any(self.path.iterdir()):
            raise CLIError(f"{self.path} is not empty and was not made by sklearn-npll train "
                           "(it has no run.json); give a new or empty --out folder.")
        self.path.mkdir(parents=True, exist_ok=True)
        _write_json(self.run_json, identity)  # the photo folder may have moved
        return identity

    def _check_same(self, made, now):
        again = f"Give another --out folder, or delete {self.path} to start over."
        if made["classes_digest"] != now["classes_digest"]:
            raise CLIError(f"{self.path} was made for the classes {listed(made['classes'])}, "
                           f"not {listed(now['classes'])}. {again}")
        if made["images_digest"] != now["images_digest"]:
            before, after = set(made["images"]), set(now["images"])
            raise CLIError(
                f"{self.path} was made for other photos: {len(made['images'])} images "
                f"(fingerprint {made['images_digest'][:12]}), now {len(now['images'])} "
                f"(fingerprint {now['images_digest'][:12]}); {len(after - before)} added, "
                f"{len(before - after)} removed, the others renamed or changed in size. "
                + again)

    def _read_identity(self):
        try:
            identity = _read_json(self.run_json)
            if identity.get("format") != FORMAT:
                raise ValueError(identity.get("format"))
            return identity
        except (ValueError, OSError) as exc:
            raise CLIError(f"{self.run_json} is damaged or not from sklearn-npll "
                           f"({exc}).") from exc

    def identity(self):
        """``run.json`` of a folder that ``train`` made.

        Raises
        ------
        CLIError
            When the folder has none.
        """
        if not self.run_json.exists():
            raise CLIError(f"{self.path} is not a RUN folder (no run.json): run "
                           "'sklearn-npll train PHOTOS --out RUN' first.")
        return self._read_identity()

    def image_paths(self):
        """The training images' paths, checked to exist."""
        identity = self.identity()
        photos = Path(identity["photos"])
        paths = [photos / name for name in identity["images"]]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise CLIError(f"{len(missing)} training images are no longer there: "
                           f"{listed(missing)}. Put the photo folder back.")
        return paths

    # ------------------------------------------------------------ training
    def settings_changed(self, settings):
        """Whether a training with other settings is in the folder; when it
        is, its checkpoint and outputs are removed, and the differences
        returned (a list of setting names)."""
        if not self.training_json.exists():
            return []
        before = _read_json(self.training_json)["settings"]
        changed = sorted(k for k in set(before) | set(settings)
                         if before.get(k) != settings.get(k))
        if changed:
            shutil.rmtree(self.checkpoint, ignore_errors=True)
            for path in (self.training_json, self.model, self.onnx):
                path.unlink(missing_ok=True)
        return changed

    def start_training(self, settings):
        """Record the settings of the training about to run (or resume)."""
        _write_json(self.training_json, {"settings": settings, "finished": False})

    def finish_training(self, settings):
        """Record that the training with ``settings`` finished."""
        _write_json(self.training_json, {"settings": settings, "finished": True})

    def finished(self, settings):
        """Whether a training with ``settings`` finished and saved its model."""
        if not (self.training_json.exists() and self.model.exists()):
            return False
        state = _read_json(self.training_json)
        return state["finished"] and state["settings"] == settings

    def checkpoint_epoch(self):
        """The epoch of the checkpoint in the folder, or 0."""
        manifest = self.checkpoint / "checkpoint.json"
        if not manifest.exists():
            return 0
        try:
            return int(_read_json(manifest)["epoch"])
        except (ValueError, KeyError, TypeError):
            return 0

    # ------------------------------------------------------------ annotation
    def save_annotation(self, teacher, candidates, votes, proba):
        """Save the teacher's candidate sets, votes and probabilities."""
        np.savez(self.annotation, teacher=json.dumps(teacher, sort_keys=True),
                 candidates=candidates, votes=votes, proba=proba)

    def load_annotation(self, teacher=None):
        """``(candidates, votes, proba)``; None when there is none, or (with
        ``teacher``) when another teacher made it."""
        if not self.annotation.exists():
            return None
        with np.load(self.annotation, allow_pickle=False) as saved:
            if teacher is not None and str(saved["teacher"]) != json.dumps(teacher,
                                                                           sort_keys=True):
                return None
            return saved["candidates"], saved["votes"], saved["proba"]

    def load_model(self):
        """The saved classifier (loaded without unpickling anything).

        Raises
        ------
        CLIError
            When the training has not finished.
        """
        if not self.model.exists():
            raise CLIError(f"{self.path} has no trained model yet: run the train command "
                           "again to finish the training.")
        from ..io import FileFormatError, UntrustedNameError, load

        try:
            return load(self.model)
        except (FileFormatError, UntrustedNameError) as exc:
            raise CLIError(f"{self.model} cannot be loaded: {exc}") from exc

    def write_json(self, path, document):
        """Write ``document`` to ``path`` (replacing it in one step)."""
        _write_json(path, document)
