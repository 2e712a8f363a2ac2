"""Small embedded copies of training images (data URIs)."""

import base64
import io
import os
from dataclasses import dataclass

import numpy as np
import torch

from .._data.inputs import as_input_data
from .._data.reader import ImageReadError, read_image, to_library_mode

# images smaller than this are stored as PNG and drawn with sharp pixels
SMALL = 64


@dataclass
class Thumbnail:
    """One image, ready to embed: ``src`` is None when it could not be read."""

    src: str
    name: str
    title: str
    pixelated: bool = False


def thumbnails(images, indices, size=128):
    """Thumbnails of ``images[i]`` for ``i`` in ``indices``, as a dict.

    ``images`` is what the classifier was given: a list of paths or PIL
    images, an array, a tensor or a Dataset. Returns None when the input
    holds feature vectors rather than images.
    """
    indices = [int(i) for i in indices]
    if isinstance(images, (list, tuple)) and images and all(
            isinstance(x, (str, os.PathLike)) for x in images):
        return {i: _from_file(images[i], size) for i in indices}
    if isinstance(images, (list, tuple)) and images and all(_is_pil(x) for x in images):
        return {i: _from_pil(images[i], size, f"image {i}") for i in indices}
    data = as_input_data(images)
    if data.kind != "images":
        return None
    if not indices:
        return {}
    batch = data.get_batch(np.asarray(indices))
    if batch.dtype.is_floating_point:
        batch = (batch.float().clamp(0, 1) * 255).round()
    arrays = batch.to(torch.uint8).numpy()
    return {i: _encode(_to_pil(a), size, f"image {i}", f"image {i}")
            for i, a in zip(indices, arrays)}


def _is_pil(obj):
    from PIL import Image

    return isinstance(obj, Image.Image)


def _to_pil(chw):
    from PIL import Image

    if chw.shape[0] == 1:
        return Image.fromarray(chw[0], mode="L")
    return Image.fromarray(np.ascontiguousarray(chw[:3].transpose(1, 2, 0)), mode="RGB")


def _from_pil(image, size, name):
    try:
        return _encode(to_library_mode(image), size, name, name)
    except ImageReadError as exc:
        return Thumbnail(None, name, f"{name} could not be read: {exc}")


def _from_file(path, size):
    path = os.fspath(path)
    name = os.path.basename(path)
    try:
        # read as the classifier reads it (upright, 16-bit rescaled); JPEGs
        # at a reduced scale
        image = read_image(path, draft=(size, size))
    except ImageReadError as exc:
        return Thumbnail(None, name, f"{path} could not be read: {exc}")
    return _encode(image, size, name, path)


def _encode(image, size, name, title):
    """A PNG (small images, sharp pixels) or JPEG data URI of ``image`` (an
    "L" or "RGB" image)."""
    image = image.copy()
    small = max(image.size) < SMALL
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    if small:
        image.save(buffer, format="PNG", optimize=True)
        mime = "image/png"
    else:
        image.save(buffer, format="JPEG", quality=82)
        mime = "image/jpeg"
    uri = f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return Thumbnail(uri, name, title, pixelated=small)
