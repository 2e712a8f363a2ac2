"""The one way the library reads an image: from a path, bytes or a PIL image
to an upright 8-bit PIL image in grey ("L") or colour ("RGB").

Every decoder goes through :func:`read_image` (files, bytes) or
:func:`to_library_mode` (PIL images): the classifiers' decode-once store,
the annotator, the report's thumbnails. So a photo is read the same way at
fit, at predict and at annotation:

- **Orientation**: an EXIF Orientation tag (phone photos) is applied with
  ``PIL.ImageOps.exif_transpose``; sizes read from the header
  (:func:`oriented_size`) are those of the upright image.
- **Bit depth**: images deeper than 8 bits are rescaled to 0..255, never
  clipped (Pillow's ``convert("L")`` clips a 16-bit image to 255):

  - 16-bit modes (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``) by their full
    range: ``round(v / 257)`` maps 0..65535 onto 0..255;
  - 32-bit integer ``I`` (how Pillow holds some 16-bit files) on the same
    16-bit scale when its values lie in 0..65535, otherwise stretched from
    its minimum to its maximum;
  - 32-bit float ``F`` from [0, 1] (the library's range for float images)
    as ``round(255 * v)`` when its values lie there, otherwise stretched
    from its minimum to its maximum; NaN or infinity make it unreadable.

  A stretched image (a constant one gives 0) has no fixed scale: two such
  images may use different ones.
- **Colour**: grey modes become "L", every other mode "RGB" (alpha dropped,
  palettes expanded), unless a mode is asked for.
- **Errors**: anything that prevents reading one image raises
  :class:`ImageReadError` with the reason; :func:`report_unreadable` turns
  the failures of a whole pass into one error or one warning. Pillow's
  decompression-bomb error and warning are given again naming the file and
  ``PIL.Image.MAX_IMAGE_PIXELS``, the setting that raises the limit.
"""

import io
import os
import threading
import warnings

import numpy as np

__all__ = ["GREY_MODES", "READER_VERSION", "ImageReadError", "UnreadableImagesWarning",
           "read_image", "read_header",
           "read_failure", "to_library_mode", "oriented_size", "report_unreadable"]

#: Changes when the pixels this module returns for a file change (the
#: annotator's cache keys of files hold it, so that embeddings of files
#: decoded by an older reader are not reused).
READER_VERSION = 2

# PIL modes read as one grey channel; every other mode is converted to RGB.
GREY_MODES = frozenset(
    {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
)
_SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_ORIENTATION = 0x0112
# orientations 5..8 swap width and height
_SWAPS_SIDES = frozenset({5, 6, 7, 8})
# Image.open under a recorded-warnings context: serialised, since
# catch_warnings swaps process-wide state (the annotator reads in threads)
_OPEN_LOCK = threading.Lock()


class _CarriesFailures:
    """A message with the ``failures`` it lists, kept through pickling (a
    worker process's exception or warning reaches its caller whole)."""

    def __init__(self, message, failures=()):
        super().__init__(message)
        self.failures = list(failures)

    def __reduce__(self):
        return type(self), (str(self), self.failures)


class ImageReadError(_CarriesFailures, ValueError):
    """An image, or several, that could not be read.

    Attributes
    ----------
    failures : list of (int or None, str, str)
        ``(sample index, name, reason)`` of each image that could not be read.
    """


class UnreadableImagesWarning(_CarriesFailures, UserWarning):
    """Images left out as unreadable (``on_bad_image="skip"``).

    Attributes
    ----------
    failures : list of (int, str, str)
        ``(sample index, name, reason)`` of each image that could not be read.
    """


def _limit_advice():
    from PIL import Image

    return (f"Pillow's limit is PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS} pixels "
            "(it refuses twice that); if you trust this file, raise it (None removes the "
            "check) before fitting or annotating.")


def _open(fp, name, warn_bomb):
    """``Image.open(fp)``, with Pillow's decompression-bomb error and warning
    naming the file and the setting; other warnings pass through unchanged."""
    from PIL import Image

    with _OPEN_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            im = Image.open(fp)
        except Image.DecompressionBombError as exc:
            raise ImageReadError(f"DecompressionBombError: {exc} {_limit_advice()}") from exc
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            if warn_bomb:
                warnings.warn(f"{name}: {w.message} {_limit_advice()}",
                              Image.DecompressionBombWarning, stacklevel=3)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno,
                                   source=w.source)
    return im


def _orientation(im, loaded=True):
    """The EXIF orientation (1..8) of ``im``; 1 when absent or unknown.

    Before decoding (``loaded=False``) a PNG's tag is read only when it
    comes before the pixels (Pillow would decode the whole image to look
    further); the decode applies the tag wherever it is.
    """
    if not loaded and im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block: the pixels are still readable
        return 1
    return value if value in range(1, 9) else 1


def oriented_size(im):
    """``(height, width)`` of ``im`` once upright, without decoding it."""
    w, h = im.size
    return (w, h) if _orientation(im, loaded=False) in _SWAPS_SIDES else (h, w)


def _stretch(arr):
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.round((arr.astype(np.float64) - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _to_8bit(im):
    """``im`` if it has 8-bit channels; else its grey values rescaled to an
    "L" image (see the module documentation for the rule)."""
    from PIL import Image

    if im.mode not in _SIXTEEN_BIT and im.mode not in ("I", "F"):
        return im
    arr = np.asarray(im)
    if im.mode in _SIXTEEN_BIT:
        out = np.round(arr.astype(np.float32) / 257.0).astype(np.uint8)
    elif im.mode == "I":
        in_range = arr.size == 0 or (arr.min() >= 0 and arr.max() <= 65535)
        out = np.round(arr / 257.0).astype(np.uint8) if in_range else _stretch(arr)
    else:
        if not np.isfinite(arr).all():
            raise ImageReadError("a float (mode F) image with NaN or infinite values")
        in_range = arr.size == 0 or (arr.min() >= 0 and arr.max() <= 1)
        out = np.round(arr * 255.0).astype(np.uint8) if in_range else _stretch(arr)
    return Image.fromarray(out, mode="L")


def to_library_mode(im, mode=None):
    """An in-memory PIL image as the library reads it: upright, 8-bit, in
    ``mode`` ("L" or "RGB"; None: "L" for grey modes, else "RGB").

    Returns ``im`` itself when nothing changes. Raises :class:`ImageReadError`
    when the image cannot be read.
    """
    from PIL import ImageOps

    mode = mode or ("L" if im.mode in GREY_MODES else "RGB")
    try:
        if _orientation(im) != 1:
            im = ImageOps.exif_transpose(im)
        im = _to_8bit(im)
        return im if im.mode == mode else im.convert(mode)
    except Exception as exc:  # any failure of Pillow's is this image's
        raise read_failure(exc) from exc


def _file_source(source, name):
    """``(what Image.open takes, the name messages use)`` of a path or bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(source), name or "image bytes"
    fp = os.fspath(source)
    return fp, name or repr(fp)


def read_failure(exc):
    """The :class:`ImageReadError` of an exception raised reading one image;
    its message, the reason, leaves out the name (messages give it once)."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, ImageReadError):
        return exc
    if isinstance(exc, UnidentifiedImageError):
        return ImageReadError("UnidentifiedImageError: not an image format Pillow can identify")
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return ImageReadError(f"{type(exc).__name__}: {exc.strerror}")
    return ImageReadError(f"{type(exc).__name__}: {exc}")


def read_header(source, name=None):
    """Upright ``(height, width)`` and PIL mode of an image file, without
    decoding its pixels (Pillow's decompression-bomb warning is given here).

    Raises :class:`ImageReadError` when the file cannot be opened.
    """
    fp, name = _file_source(source, name)
    try:
        with _open(fp, name, warn_bomb=True) as im:
            return oriented_size(im), im.mode
    except Exception as exc:  # any failure of Pillow's is this file's
        raise read_failure(exc) from exc


def read_image(source, mode=None, *, draft=None, name=None, warn_bomb=True):
    """Read one image as the library does.

    Parameters
    ----------
    source : str, path-like, bytes or PIL image
        A file, its bytes, or an image already in memory.
    mode : {"L", "RGB"} or None
        Colour mode of the result; None: "L" for grey images, else "RGB".
    draft : (height, width) or None
        JPEG only: decode at the smallest 1/2, 1/4 or 1/8 scale whose upright
        image still has at least this size (a no-op for other formats).
    name : str, optional
        How messages name the image (default: the path).
    warn_bomb : bool, default=True
        Give Pillow's decompression-bomb warning (False where a header pass
        already gave it).

    Returns
    -------
    image : PIL.Image.Image
        Decoded, upright, in ``mode``.

    Raises
    ------
    ImageReadError
        When the image cannot be read; the message is the reason.
    """
    from PIL import Image

    if isinstance(source, Image.Image):
        return to_library_mode(source, mode)
    fp, name = _file_source(source, name)
    try:
        with _open(fp, name, warn_bomb) as im:
            if draft is not None and im.format == "JPEG":
                h, w = draft
                if _orientation(im, loaded=False) in _SWAPS_SIDES:
                    h, w = w, h
                im.draft(mode or ("L" if im.mode in GREY_MODES else "RGB"), (w, h))
            im.load()
            return to_library_mode(im, mode)
    except Exception as exc:  # any failure of Pillow's is this file's
        raise read_failure(exc) from exc


def report_unreadable(failures, n_total, on_bad_image="raise", what="images",
                      skipped="they are left out, with their rows of y"):
    """One error, or one warning, for every image a pass could not read.

    Parameters
    ----------
    failures : list of (int, str, str)
        ``(sample index, name, reason)``, in any order.
    n_total : int
        How many images the pass read.
    on_bad_image : {"raise", "skip"}
        "raise": an :class:`ImageReadError` listing them all; "skip": an
        :class:`UnreadableImagesWarning` (a ``UserWarning``) listing them all.
    what : str
        What the images are, for the message ("image files", "images").
        A pass where no image is readable raises whatever ``on_bad_image``.
    skipped : str
        What leaving an image out means, for the warning.

    Returns
    -------
    kept : ndarray of int
        The indices of the readable images, in order (all of them when
        ``failures`` is empty).
    """
    bad = sorted(failures, key=lambda f: f[0])
    kept = np.setdiff1d(np.arange(n_total), [f[0] for f in bad]).astype(np.int64)
    if not bad:
        return kept
    lines = "\n".join(f"  {name} (sample {i}): {reason}" for i, name, reason in bad)
    head = f"{len(bad)} of {n_total} {what} could not be read"
    if on_bad_image == "skip" and kept.size:
        warnings.warn(UnreadableImagesWarning(
            f"{head}; on_bad_image='skip': {skipped}:\n{lines}", bad), stacklevel=3)
        return kept
    if len(bad) == n_total:
        advice = "Check the paths and that the files are images Pillow can open."
    else:
        advice = f"Fix or remove them, or pass on_bad_image='skip' ({skipped})."
    raise ImageReadError(f"{head}:\n{lines}\n{advice}", bad)
