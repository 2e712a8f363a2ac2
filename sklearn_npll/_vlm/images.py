"""The annotator's image pipeline: content keys first, decoding only on a cache miss.

Every image gets a content key before anything expensive happens: the digest
of a file's bytes for file paths (so a cached re-run reads and hashes the
files but never decodes them), the digest of the RGB pixels and shape for
arrays and PIL images. Only the cache misses are decoded and preprocessed
(:func:`embed_images`, which also overlaps preprocessing with encoding).

Images are read by the library's one reader
(:mod:`sklearn_npll._data.reader`), as the classifiers read them: upright
(EXIF orientation applied), 16-bit and float images rescaled to 8 bits. A
file's key is a digest of its bytes, which a change of the reader does not
change: it also holds :data:`~sklearn_npll._data.reader.READER_VERSION`, so
that embeddings cached from pixels an older reader decoded (a photo on its
side, a blank 16-bit scan) are computed again rather than reused. An image
that cannot be read (a missing or damaged file) is recorded with its index
and reason; they are reported together once every image was tried.
"""

import collections
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .._data.annotated import AnnotatedImages
from .._data.inputs import as_input_data, is_pil_image
from .._data.reader import (READER_VERSION, ImageReadError, read_failure, read_image,
                            report_unreadable, to_library_mode)
from .._digest import digest


#: What on_bad_image="skip" does with an unreadable image, for messages.
SKIPPED = "they are annotated as unlabeled, every class a candidate"


def pixels_key(img):
    """Content key of an ``(H, W, 3)`` uint8 image: digest of its shape and pixels."""
    return digest(f"pixels:{img.shape[0]}x{img.shape[1]}x3:".encode(),
                   np.ascontiguousarray(img).data)


def file_key(data, draft=None):
    """Content key of an image file: digest of its bytes, of the reader's
    version and of the draft size.

    A JPEG decoded in draft mode (:func:`draft_size`) has slightly different
    pixels from a full decode, so its embedding is cached under its own key;
    so has a file decoded by another version of the reader.
    """
    prefix = f"file:reader{READER_VERSION}:" + ("" if draft is None else f"draft{draft}:")
    return digest(prefix.encode(), data)


def draft_size(preprocess):
    """The side both sides of a decoded image must keep for ``preprocess``, or None.

    When a ``Compose`` pipeline starts by resizing the whole image to sides of
    at most ``s`` pixels (torchvision ``Resize``, open_clip ``ResizeKeepRatio``,
    which open_clip's preprocessing does), a JPEG decoded at a reduced DCT
    scale whose sides both stay at least ``s`` gives that resize nearly the
    same picture at a fraction of the memory and time. For anything else (a
    user callable, a crop first) this returns None and files are decoded in
    full.
    """
    steps = getattr(preprocess, "transforms", None)
    if not steps or type(steps[0]).__name__ not in ("Resize", "ResizeKeepRatio"):
        return None
    size = steps[0].size
    sizes = [size] if isinstance(size, int) else list(size)
    sizes.append(getattr(steps[0], "max_size", None) or 0)
    if not all(isinstance(v, int) for v in sizes) or max(sizes) <= 0:
        return None
    return max(sizes)


class _Done:
    """A finished computation with the interface of a future."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class _EncodedFile:
    """The bytes of an image file, decoded only when its embedding is missing."""

    __slots__ = ("path", "index", "data", "draft")

    def __init__(self, path, index, data, draft=None):
        self.path, self.index, self.data, self.draft = path, index, data, draft

    def to_pil(self):
        # JPEG: decoded at 1/2, 1/4 or 1/8 scale, keeping both sides >= draft
        draft = None if self.draft is None else (self.draft, self.draft)
        return read_image(self.data, "RGB", draft=draft, name=repr(self.path))


class _Unreadable:
    """The payload of an image that could not be read: its name and reason."""

    __slots__ = ("name", "reason")

    def __init__(self, name, reason):
        self.name, self.reason = name, reason


class ImageSource:
    """Any supported image input as ``(key, payload)`` pairs, chunk by chunk.

    Lists of PIL images and lists of paths are read one by one, so they may
    mix image sizes (the model's preprocess resizes them); everything else
    goes through :func:`as_input_data`. A payload becomes a PIL RGB image
    with :func:`to_pil`. ``draft`` (see :func:`draft_size`) lets JPEG files
    be decoded at a reduced scale, and is part of their keys.
    """

    def __init__(self, X, draft=None):
        self.draft = draft
        if isinstance(X, AnnotatedImages):
            X = X.images
        self.items = None
        self.data = None
        if isinstance(X, (list, tuple)) and len(X) > 0:
            if all(is_pil_image(x) for x in X):
                self.items, self.kind = list(X), "pil"
            elif all(isinstance(x, (str, os.PathLike)) for x in X):
                self.items, self.kind = [os.fspath(x) for x in X], "path"
        if self.items is None:
            data = as_input_data(X)
            if data.kind != "images":
                raise ValueError(
                    "VLMPartialAnnotator needs images, but X was read as feature "
                    f"vectors of shape {data.sample_shape}. Pass images as "
                    "(N, H, W), (N, H, W, C) or (N, C, H, W) arrays, PIL images or "
                    "file paths."
                )
            self.data = data

    def __len__(self):
        return len(self.items) if self.items is not None else len(self.data)

    def _keyed(self, i):
        """``(key, payload)`` of item ``i``; ``(None, _Unreadable)`` when it
        cannot be read."""
        item = self.items[i]
        if self.kind == "pil":
            try:
                img = np.asarray(to_library_mode(item, "RGB"), dtype=np.uint8)
            except ImageReadError as exc:
                return None, _Unreadable("PIL image", str(exc))
            return pixels_key(img), img
        try:
            with open(item, "rb") as f:
                data = f.read()
        except OSError as exc:
            return None, _Unreadable(repr(item), str(read_failure(exc)))
        return file_key(data, self.draft), _EncodedFile(item, i, data, self.draft)

    def chunk(self, start, stop, mapper=map):
        """``(key, payload)`` of the images ``start:stop``.

        ``mapper`` (``map`` or a thread pool's) reads files and PIL images;
        array inputs are hashed with it when the images are large.
        """
        if self.items is not None:
            return list(mapper(self._keyed, range(start, stop)))
        batch = self.data.get_batch(slice(start, stop))
        if batch.dtype != torch.uint8:
            batch = (batch.float().clamp(0, 1) * 255).round().to(torch.uint8)
        arr = batch.numpy()
        if arr.shape[1] == 1:
            arr = np.repeat(arr, 3, axis=1)
        elif arr.shape[1] > 3:
            arr = arr[:, :3]
        images = list(np.ascontiguousarray(arr.transpose(0, 2, 3, 1)))
        # hashing releases the GIL, but threads only pay off on large images
        keys = mapper(pixels_key, images) if images[0].nbytes >= 1 << 16 else map(
            pixels_key, images)
        return list(zip(keys, images))


def to_pil(payload):
    """The PIL RGB image of a payload of :meth:`ImageSource.chunk`."""
    if isinstance(payload, _EncodedFile):
        return payload.to_pil()
    from PIL import Image

    return Image.fromarray(payload)


class _EmbeddingRun:
    """The state of one :func:`embed_images` call: output, queues, thread pools.

    An image whose embedding is in a cache goes straight to ``out``. A miss
    waits under its key, with every index that shares the key: in
    ``pending`` (key -> [preprocessed tensor, indices]) until a batch is
    full, then in ``waiting`` (key -> indices) while its batch is encoded;
    ``inflight`` holds the batches being encoded, oldest first, as
    ``(keys, future)``.
    """

    def __init__(self, n, encode, preprocess, memory, disk, batch_size, workers):
        self.n, self.encode, self.preprocess = n, encode, preprocess
        self.memory, self.disk = memory, disk
        self.batch_size, self.workers = batch_size, workers
        self.out = None
        self.failures = []  # (index, name, reason) of the images not read
        self.pending = {}
        self.waiting = {}
        self.inflight = collections.deque()
        self.executor = ThreadPoolExecutor(workers) if workers > 1 else None
        self.model_thread = ThreadPoolExecutor(1) if workers > 1 else None

    def close(self):
        for pool in (self.executor, self.model_thread):
            if pool is not None:
                pool.shutdown()

    def map(self, fn, items):
        """``map`` over a few contiguous parts in the pool (one task per part)."""
        items = list(items)
        if self.executor is None or len(items) < 2:
            return [fn(x) for x in items]
        size = -(-len(items) // self.workers)
        parts = [items[i : i + size] for i in range(0, len(items), size)]
        done = self.executor.map(lambda part: [fn(x) for x in part], parts)
        return [y for part in done for y in part]

    def store(self, i, vec):
        """Put image ``i``'s embedding in ``out`` (allocated at the first one)."""
        if self.out is None:
            self.out = np.empty((self.n, vec.shape[0]), dtype=np.float32)
        self.out[i] = vec

    def add_chunk(self, source, start, stop):
        """Look up the images ``start:stop``, preprocess their misses and
        encode every batch that is full."""
        self._preprocess(self._look_up(source, start, stop))
        while len(self.pending) >= self.batch_size:
            self._submit()

    def drain(self):
        """Encode what is left, a last batch possibly smaller."""
        while self.pending:
            self._submit()
        while self.inflight:
            self._finish()

    def _look_up(self, source, start, stop):
        """Store the cached embeddings of ``start:stop``; ``(key, payload)`` of
        each new miss (a key already waiting only gains the index)."""
        misses = []
        for offset, (key, payload) in enumerate(source.chunk(start, stop, self.map)):
            i = start + offset
            if key is None:
                self.failures.append((i, payload.name, payload.reason))
                continue
            vec = self.memory.get(key)
            if vec is None and self.disk is not None:
                vec = self.disk.lookup(key, self.memory)
            if vec is not None:
                self.store(i, vec)
            elif key in self.waiting:
                self.waiting[key].append(i)
            elif key in self.pending:
                self.pending[key][1].append(i)
            else:
                self.pending[key] = [None, [i]]
                misses.append((key, payload))
        return misses

    def _decode(self, payload):
        """The preprocessed tensor of a payload, or :class:`_Unreadable`."""
        try:
            image = to_pil(payload)
        except ImageReadError as exc:
            return _Unreadable(repr(payload.path), str(exc))
        return self.preprocess(image)

    def _preprocess(self, misses):
        """Decode and preprocess the misses (in the pool) into their pending
        entries; a key whose image cannot be read leaves the queue, its
        indices recorded as failures."""
        tensors = self.map(self._decode, [payload for _, payload in misses])
        for (key, _), tensor in zip(misses, tensors):
            if isinstance(tensor, _Unreadable):
                self.failures += [(i, tensor.name, tensor.reason)
                                  for i in self.pending.pop(key)[1]]
            else:
                self.pending[key][0] = tensor

    def _submit(self):
        """Start encoding a batch of pending keys, then finish the one before."""
        keys = list(self.pending)[: self.batch_size]
        batch = torch.stack([self.pending[k][0] for k in keys]).float()
        for key in keys:
            self.waiting[key] = self.pending.pop(key)[1]
        if self.model_thread is None:
            self.inflight.append((keys, _Done(self.encode(batch))))
        else:
            self.inflight.append((keys, self.model_thread.submit(self.encode, batch)))
        while len(self.inflight) > 1:  # the previous batch; this one keeps running
            self._finish()

    def _finish(self):
        """Store the oldest encoded batch in ``out`` and the caches."""
        keys, future = self.inflight.popleft()
        feats = np.ascontiguousarray(future.result(), dtype=np.float32)
        if self.disk is not None:
            self.disk.add(keys, feats)
        for key, vec in zip(keys, feats):
            self.memory[key] = vec
            for i in self.waiting.pop(key):
                self.store(i, vec)


def embed_images(source, encode, preprocess, memory, disk=None, batch_size=256, workers=1,
                 verbose=False, on_bad_image="raise"):
    """Normalised embeddings ``(n, dim)`` float32 of an :class:`ImageSource`, through caches.

    Images are keyed (files by their bytes, arrays by their pixels) and
    looked up chunk by chunk in ``memory`` (a dict, filled with what is
    encoded) and ``disk`` (a :class:`~sklearn_npll._vlm.cache.DiskCache` or
    None); only the misses are decoded and preprocessed, by ``workers``
    threads, and encoded in full batches of ``batch_size`` by ``encode``
    (float batch -> normalised numpy embeddings) in one model thread, so
    preprocessing the next chunk overlaps with encoding. Duplicates are
    encoded once.

    Images that cannot be read are reported together at the end
    (:func:`~sklearn_npll._data.reader.report_unreadable`): one error with
    ``on_bad_image="raise"``; with ``"skip"`` one warning, and their rows
    of the result are NaN.
    """
    from tqdm.auto import tqdm

    n = len(source)
    run = _EmbeddingRun(n, encode, preprocess, memory, disk, batch_size, workers)
    try:
        with tqdm(total=n, unit="img", desc="Annotating", disable=not verbose) as bar:
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                run.add_chunk(source, start, stop)
                bar.update(stop - start)
            run.drain()
    finally:
        run.close()
    if run.failures:
        report_unreadable(run.failures, n, on_bad_image, "images",
                          skipped=SKIPPED)
        run.out[[i for i, _, _ in run.failures]] = np.nan
    return run.out
