"""Candidate label sets proposed by a vision-language model.

:class:`VLMPartialAnnotator` is a scikit-learn transformer built on open_clip:
it scores every image against every (prompt template, class name) pair and
turns the scores into a candidate set per image, the input of a partial-label
classifier. It knows nothing about the classifier that follows it.

How a set is made, for class names ``n_1..n_C`` and templates ``T_1..T_d``:

- text embedding ``t_ij = normalise(encode_text(T_i(n_j)))``;
- image embedding ``r = normalise(encode_image(x))``;
- per template, scores ``s_i = logit_scale * r . t_i + logit_bias`` and
  probabilities ``p_i = softmax(s_i)`` (``sigmoid(s_i)`` for sigmoid models
  such as SigLIP, which have a logit bias);
- ``"multi_prompt"``: the union over templates of each template's top-1 class;
  ``"topk"``: the ``k`` classes of highest template-averaged probability;
  ``"prob_ratio"``: among those ``k``, the classes whose averaged probability
  is at least ``ratio`` times the top-1 probability.

The parts live in the ``_vlm`` subpackage: ``hub`` (loading models, offline
handling), ``images`` (reading and keying images, the batched embedding
pipeline), ``cache`` (model, preprocessing and tokenizer identities, the
image and prompt embedding caches), ``templates`` and ``report``; this
module holds the estimator.
"""

import io
import os
import re
import sys
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._data.candidates import _format_list
from ._data.annotated import AnnotatedImages
from ._vlm.templates import (
    SMALL_TEMPLATES,
    TEMPLATE_SETS,
    fill,
    prompt_name,
    resolve_templates,
    template_label,
)
from ._vlm.cache import (
    DiskCache,
    key_of,
    model_digests,
    prompt_embeddings,
    tokenizer_key,
    transform_key,
)
from ._runtime import autocast, resolve_device, resolve_precision
from ._vlm.hub import load_open_clip
from ._vlm.images import ImageSource, draft_size, embed_images
from ._vlm.report import annotation_report
from .datasets import candidate_stats

__all__ = ["VLMPartialAnnotator", "SMALL_TEMPLATES", "TEMPLATE_SETS"]

# Upper bound on the elements of one (rows, templates, classes) score block.
_SCORE_BLOCK = 1 << 22


def _module_device(module):
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _has_low_precision(module):
    return any(p.is_floating_point() and p.dtype != torch.float32 for p in module.parameters())


def _cpu_copy(module):
    buf = io.BytesIO()
    torch.save(module, buf)
    buf.seek(0)
    return torch.load(buf, map_location="cpu", weights_only=False)


class _DeferredAnnotation:
    """The annotation of ``images`` by a frozen copy of a fitted annotator.

    What :meth:`VLMPartialAnnotator.transform` hands to
    :class:`~sklearn_npll._data.annotated.AnnotatedImages`: a refit or ``set_params``
    of the annotator afterwards does not change it, and it pickles (without
    the vision-language model, which is loaded again if it must annotate).
    """

    def __init__(self, annotator, images):
        self.annotator = annotator
        self.images = images

    def __call__(self):
        candidates = self.annotator.annotate(self.images)
        return candidates, self.annotator.votes_, self.annotator.proba_


class VLMPartialAnnotator(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Propose candidate label sets with a vision-language model (open_clip).

    ``fit`` loads the model and encodes every (template, class) prompt once;
    ``transform`` encodes the images and returns them with their candidate
    sets as an :class:`~sklearn_npll._data.annotated.AnnotatedImages`, which a
    partial-label classifier accepts as ``X``. No manual label is needed
    anywhere. Image embeddings are cached in memory and, with ``cache_dir``,
    on disk, keyed by the model and the image content, so annotating the same
    images again (a second ``transform``, every fold of a grid search) does
    not run the image tower again; prompt embeddings are cached the same way,
    so the clones of a grid search encode their prompts once.

    Parameters
    ----------
    class_names : array-like of str of shape (n_classes,)
        The class names, written the way a caption would mention them
        (``"number 0"`` rather than ``"0"``). They are also ``classes_``,
        unchanged; in prompts, underscores read as spaces (``"maple_tree"``
        is prompted as ``"maple tree"``).
    model_name : str, default="ViT-B-32"
        The open_clip architecture (see ``open_clip.list_models()``), or a
        ``"hf-hub:org/repo"`` / ``"local-dir:/path"`` reference.
    pretrained : str or os.PathLike, default="openai"
        Weights: an open_clip tag (``open_clip.list_pretrained()``), the path
        of a local checkpoint file for ``model_name`` (``.pt``, ``.bin``,
        ``.safetensors``; loaded with
        ``open_clip.create_model_and_transforms(model_name, pretrained=path)``),
        or None for random weights (testing only). Ignored when ``model`` is
        given or ``model_name`` is a hub/local-dir reference. Weights named by
        a tag are taken from the local Hugging Face cache when present
        (without contacting the network); otherwise they are downloaded
        within ``hub_timeout`` seconds, or ``fit`` raises an ``OSError``
        explaining the offline options. Models with a Hugging Face tokenizer
        (SigLIP, SigLIP2, ...) need the ``hf`` extra
        (``pip install "sklearn-npll[hf]"``, which installs ``transformers``).
    templates : {"small", "imagenet", "imagenet-simple"} or list, default="small"
        Prompt templates: ``"small"`` is the 27-template reference set
        (:data:`SMALL_TEMPLATES`), ``"imagenet"`` open_clip's 80
        ``OPENAI_IMAGENET_TEMPLATES``, ``"imagenet-simple"`` its 7
        ``SIMPLE_IMAGENET_TEMPLATES`` (see ``TEMPLATE_SETS``); a list may hold
        strings with one ``{}`` placeholder for the class name, or callables
        called with each class name (as it reads in prompts, see
        ``class_names``) and returning the prompt.
    mode : {"multi_prompt", "topk", "prob_ratio", "threshold"}, default="multi_prompt"
        How a candidate set is made (the rules of the reference code).
        ``"multi_prompt"``: union over templates of each template's top-1
        class. ``"topk"``: the ``k`` classes with the highest
        template-averaged probability. ``"prob_ratio"``: among those ``k``
        classes, those whose averaged probability is at least ``ratio`` times
        the top-1 probability. ``"threshold"``: every class whose averaged
        probability is at least ``threshold``, and the top-1 class. Every set
        is non-empty.
    k : int, default=5
        Number of classes considered by ``"topk"`` (must not exceed the
        number of classes) and ``"prob_ratio"`` (clipped to it).
    ratio : float in (0, 1], default=0.5
        Threshold of ``"prob_ratio"``, relative to the top-1 probability.
    threshold : float in (0, 1], default=0.1
        Threshold of ``"threshold"`` on the averaged probability.
    batch_size : int, default=256
        Images (and prompts) per forward pass.
    n_jobs : int, default=None
        Threads that read, hash and preprocess images while the model runs
        (decoding, resizing and tensor conversion release the GIL). None
        uses up to 8 (the number of CPUs if fewer); -1 all CPUs; 1 none.
    device : str or torch.device, default="auto"
        Where the model runs; ``"auto"`` picks CUDA when available.
    cache_dir : str or os.PathLike, default=None
        Directory of the on-disk embedding cache, shared by every instance
        (and clone, and process) that points to it: one subdirectory per
        (image tower, preprocessing, precision) identity holding image
        embeddings, one per text identity holding prompt embeddings, each as
        shard files of one batch. A damaged shard is skipped with a warning
        and encoded again. None keeps the in-memory caches only. Not used
        (with a warning) when ``preprocess`` is a callable of your own and
        ``preprocess_key`` is None.
    verbose : bool or int, default=False
        Print what is loaded and show progress bars over the prompts and the
        images.
    model : torch.nn.Module, default=None
        A ready model with ``encode_image`` and ``encode_text`` (an open_clip
        model, for instance); ``model_name`` and ``pretrained`` are then not
        used to load anything. ``fit`` sets it to eval mode and moves it to
        ``device``.
    preprocess : callable, default=None
        PIL image -> ``(3, H, W)`` tensor. Required with ``model`` unless the
        model carries open_clip's ``visual.preprocess_cfg``.
    tokenizer : callable, default=None
        List of prompts -> token tensor. With ``model`` and no tokenizer,
        ``open_clip.get_tokenizer(model_name)`` is used with the model's
        context length. Prompt embeddings are cached only for open_clip's
        tokenizers.
    synonyms : dict of str to list of str, default=None
        Extra names per class (``{"car": ["automobile"]}``). The text
        embeddings of a class's names are averaged for every template.
    precision : {"auto", "fp32", "fp16", "bf16"}, default="auto"
        Compute precision of both towers. ``"auto"``: on CUDA bf16 autocast
        where the GPU supports it, else fp16; fp32 elsewhere (the classifiers'
        rule). ``"fp16"`` / ``"bf16"`` run the model under
        ``torch.autocast`` with that type; ``"fp32"`` runs in float32 and
        converts a model created at a lower precision (open_clip's
        ``precision="bf16"``, for instance) to float32 at ``fit``. Embeddings
        of different precisions are cached apart.
    hub_timeout : float, default=60.0
        Seconds ``fit`` may spend downloading what is not cached (weights,
        configs, tokenizers) before it raises an ``OSError``; a download
        still running then is left to finish in a background thread.
    preprocess_key : str, default=None
        A name for your own ``preprocess`` callable, to change whenever its
        behaviour changes: it then identifies the preprocessing in the disk
        cache. open_clip and torchvision transforms are identified by their
        parameters and need none.
    on_bad_image : {"raise", "skip"}, default="raise"
        Images that cannot be read (missing or damaged files, files over
        Pillow's ``PIL.Image.MAX_IMAGE_PIXELS``) are all tried before any is
        reported. "raise": one ``ValueError`` names every one with its index
        and reason. "skip": one warning names them, and the annotation
        (``annotate``, ``transform``, ``fit_transform``) keeps one row per
        image, giving each of them the set of every class (no information),
        no vote (-1) and uniform probabilities; a classifier with
        ``on_bad_image="skip"`` then leaves them out of training.
        ``predict`` and ``predict_proba`` always raise: they have no answer
        for an image they cannot see.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class names, in column order of the candidate matrix.
    templates_ : list of str or callable
        The templates used: strings with a ``{}`` placeholder, or callables.
    prompt_names_ : list of str
        How each class reads in prompts.
    precision_ : {"fp32", "fp16", "bf16"}
        The resolved ``precision``.
    model_ : torch.nn.Module
        The vision-language model. Not pickled when it was loaded from
        ``model_name`` / ``pretrained``: an unpickled annotator loads it
        again the first time it must annotate (and checks that the weights
        are the same).
    preprocess_ : callable
        Its image preprocessing (PIL image -> tensor).
    tokenizer_ : callable
        Its tokenizer.
    text_features_ : ndarray of shape (n_templates, n_classes, embed_dim)
        Normalised text embedding of every (template, class) prompt.
    logit_scale_ : float
        The model's ``logit_scale.exp()`` (100 for a model without one).
    logit_bias_ : float or None
        The model's logit bias; not None for sigmoid models such as SigLIP.
    model_key_ : str or None
        Identity of the image embeddings (digest of the whole image tower's
        state, the preprocessing and the precision) used as cache key; None
        when the preprocessing has no identity (no disk caching).
    votes_ : ndarray of shape (n_samples, n_templates)
        Per-template top-1 class indices of the last :meth:`annotate` (or
        ``fit_transform``).
    proba_ : ndarray of shape (n_samples, n_classes)
        Template-averaged class probabilities (rows summing to one) of the
        same annotation: the teacher's soft labels.
    candidate_stats_ : dict
        :func:`~sklearn_npll.datasets.candidate_stats` of the same annotation,
        with coverage and noise rate when ``fit_transform`` got ``y``.

    See Also
    --------
    sklearn_npll.datasets.candidate_stats : Summary of candidate sets.

    Notes
    -----
    Template averaging averages per-template probabilities, not embeddings.
    For softmax models ``p_i = softmax(logit_scale * r . t_i)``; for sigmoid
    models (those with a logit bias) every class gets an independent
    ``sigmoid(logit_scale * r . t_ij + logit_bias)``. ``predict_proba``
    returns the template average, renormalised to sum to one per row (a
    no-op for softmax models); top-k and ratio rules are unaffected by that
    renormalisation. A template's vote is the argmax of its scores.

    Image embeddings are keyed by a digest of every tensor of the image tower
    (computed once per loaded model), the preprocessing's parameters, the
    precision and each image's content: the bytes of a file (so a cached
    re-run does not decode the files again) or the RGB pixels and shape of an
    array or PIL image. Files are read a batch at a time; when the
    preprocessing starts with a resize (open_clip's does), JPEG files are
    decoded in draft mode at the smallest DCT scale that keeps both sides at
    least the resize's size, which bounds memory and speeds decoding; their
    keys record it, as the pixels differ slightly from a full decode. An
    injected model whose weights change after ``fit`` is detected; refit it.
    ``transform`` returns a container, not an array: ``set_output`` accepts
    only ``"default"`` (so ``Pipeline.set_output(transform="default")``
    works) and refuses ``"pandas"`` and ``"polars"``, which would drop the
    images; :meth:`get_feature_names_out` names the candidate columns.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_npll.annotate import VLMPartialAnnotator
    >>> images = np.random.default_rng(0).integers(0, 256, (8, 224, 224, 3), dtype=np.uint8)
    >>> annotator = VLMPartialAnnotator(["cat", "dog", "car"])  # doctest: +SKIP
    >>> annotated = annotator.fit_transform(images)  # doctest: +SKIP
    >>> annotated.candidates.shape  # doctest: +SKIP
    (8, 3)
    >>> annotator.predict(images[:2])  # doctest: +SKIP
    array(['car', 'car'], dtype='<U3')
    """

    _parameter_constraints = {
        "class_names": ["array-like"],
        "model_name": [str],
        "pretrained": [str, os.PathLike, None],
        "templates": [StrOptions(set(TEMPLATE_SETS)), list, tuple],
        "mode": [StrOptions({"multi_prompt", "topk", "prob_ratio", "threshold"})],
        "k": [Interval(Integral, 1, None, closed="left")],
        "ratio": [Interval(Real, 0, 1, closed="right")],
        "threshold": [Interval(Real, 0, 1, closed="right")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "device": [str, torch.device],
        "cache_dir": [str, os.PathLike, None],
        "verbose": ["verbose"],
        "model": [torch.nn.Module, None],
        "preprocess": [callable, None],
        "tokenizer": [callable, None],
        "synonyms": [dict, None],
        "precision": [StrOptions({"auto", "fp32", "fp16", "bf16"})],
        "hub_timeout": [Interval(Real, 0, None, closed="neither")],
        "preprocess_key": [str, None],
        "on_bad_image": [StrOptions({"raise", "skip"})],
    }

    def __init__(
        self,
        class_names,
        model_name="ViT-B-32",
        pretrained="openai",
        templates="small",
        mode="multi_prompt",
        k=5,
        ratio=0.5,
        threshold=0.1,
        batch_size=256,
        n_jobs=None,
        device="auto",
        cache_dir=None,
        verbose=False,
        model=None,
        preprocess=None,
        tokenizer=None,
        synonyms=None,
        precision="auto",
        hub_timeout=60.0,
        preprocess_key=None,
        on_bad_image="raise",
    ):
        self.class_names = class_names
        self.model_name = model_name
        self.pretrained = pretrained
        self.templates = templates
        self.mode = mode
        self.k = k
        self.ratio = ratio
        self.threshold = threshold
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.device = device
        self.cache_dir = cache_dir
        self.verbose = verbose
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.synonyms = synonyms
        self.precision = precision
        self.hub_timeout = hub_timeout
        self.preprocess_key = preprocess_key
        self.on_bad_image = on_bad_image

    # ---------------------------------------------------------------- checks

    def _check_class_names(self):
        names = self.class_names
        if isinstance(names, str):
            raise ValueError(
                "class_names must be a list of class names, got the single string "
                f"{names!r}."
            )
        names = [str(n) for n in np.asarray(names, dtype=object).reshape(-1)]
        if len(names) < 2:
            raise ValueError(
                f"class_names needs at least 2 classes to choose from, got {names}."
            )
        empty = [i for i, n in enumerate(names) if not n.strip()]
        if empty:
            raise ValueError(f"class_names has empty names at positions {empty[:5]}.")
        uniques, counts = np.unique(names, return_counts=True)
        if (counts > 1).any():
            raise ValueError(
                f"class_names contains duplicates: {_format_list(uniques[counts > 1])}."
            )
        return names

    def _check_synonyms(self, names):
        if not self.synonyms:
            return {}
        unknown = [c for c in self.synonyms if c not in names]
        if unknown:
            raise ValueError(
                f"synonyms has keys that are not class names: {_format_list(unknown)}."
            )
        out = {}
        for c, extra in self.synonyms.items():
            extra = [extra] if isinstance(extra, str) else list(extra)
            if not all(isinstance(e, str) and e.strip() for e in extra):
                raise ValueError(f"synonyms[{c!r}] must be a list of non-empty strings.")
            out[c] = extra
        return out

    # ------------------------------------------------------------------- fit

    def _log(self, message):
        if self.verbose:
            print(f"[VLMPartialAnnotator] {message}", file=sys.stderr)

    def _load_model(self):
        """``(model, preprocess, tokenizer)`` from the parameters."""
        if self.model is not None:
            model = self.model
            preprocess = self.preprocess
            if preprocess is None:
                cfg = getattr(getattr(model, "visual", None), "preprocess_cfg", None)
                if not cfg:
                    raise ValueError(
                        "model was given without preprocess and carries no "
                        "visual.preprocess_cfg; pass preprocess= (PIL image -> "
                        "tensor), e.g. the third value returned by "
                        "open_clip.create_model_and_transforms."
                    )
                from open_clip.transform import PreprocessCfg, image_transform_v2

                preprocess = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
            tokenizer = self.tokenizer
            if tokenizer is None:
                import open_clip

                tokenizer = open_clip.get_tokenizer(
                    self.model_name, context_length=getattr(model, "context_length", None)
                )
        else:
            self._log(f"loading {self.model_name} / {self.pretrained}")
            model, preprocess, tokenizer = load_open_clip(
                self.model_name, self.pretrained, timeout=self.hub_timeout,
                verbose=self.verbose,
            )
            if self.preprocess is not None:
                preprocess = self.preprocess
            if self.tokenizer is not None:
                tokenizer = self.tokenizer
        for name in ("encode_image", "encode_text"):
            if not callable(getattr(model, name, None)):
                raise TypeError(
                    f"The model ({type(model).__name__}) has no {name} method; give an "
                    "open_clip model or one with encode_image and encode_text."
                )
        return model, preprocess, tokenizer

    def _place_model(self, model):
        """Eval mode, float32 weights when computing in fp32, on the device."""
        model.eval()
        if self.precision_ == "fp32" and _has_low_precision(model):
            model.float()
        model.to(resolve_device(self.device))
        return model

    def _compute(self, device):
        """Context of every forward pass: autocast in fp16 / bf16."""
        return autocast(self.precision_, device)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Load the model and encode the text prompts.

        No image is processed: ``X`` and ``y`` are accepted for pipeline
        compatibility and ignored.

        Parameters
        ----------
        X : ignored
            Not used.
        y : ignored
            Not used.

        Returns
        -------
        self : VLMPartialAnnotator
            The fitted annotator.
        """
        names = self._check_class_names()
        templates = resolve_templates(self.templates, probe_name=prompt_name(names[0]))
        synonyms = self._check_synonyms(names)
        if self.mode == "topk" and self.k > len(names):
            raise ValueError(
                f"k={self.k} exceeds the number of classes ({len(names)}) in "
                "mode='topk'; choose k <= n_classes."
            )
        model, preprocess, tokenizer = self._load_model()
        device = resolve_device(self.device)
        self.precision_ = resolve_precision(self.precision, device)
        self._place_model(model)

        self.model_ = model
        self.preprocess_ = preprocess
        self.tokenizer_ = tokenizer
        # shared with the copies deferred annotations hold, so that a model
        # loaded again (after unpickling) by one of them serves all
        self._loaded = {"model": model, "preprocess": preprocess, "tokenizer": tokenizer}
        self.classes_ = np.asarray(names)
        self.templates_ = templates
        self.prompt_names_ = [prompt_name(n) for n in names]
        self._set_identities(model, preprocess, tokenizer)
        self.text_features_ = self._encode_prompts(self.prompt_names_, templates, synonyms,
                                                   names, device)
        self._set_logit_transform(model)
        if (
            self.model_key_ is None
            or getattr(self, "_cache_key", None) != self.model_key_
            or not hasattr(self, "_memory_cache")
        ):
            self._memory_cache = {}
        self._cache_key = self.model_key_
        self._text_cache = None
        self._log(
            f"{len(templates)} templates x {len(names)} classes encoded "
            f"(logit scale {self.logit_scale_:.1f}"
            + ("" if self.logit_bias_ is None else f", sigmoid scores, bias {self.logit_bias_:.2f}")
            + ")"
        )
        return self

    def _set_identities(self, model, preprocess, tokenizer):
        """What the cached embeddings are keyed by: the image side (``model_key_``,
        None when ``preprocess`` cannot be identified) and the text side."""
        image_digest, text_digest = model_digests(model)
        self._image_digest = image_digest
        preprocess_id = self.preprocess_key or transform_key(preprocess)
        if preprocess_id is None:
            self.model_key_ = None
            if self.cache_dir is not None:
                warnings.warn(
                    f"cache_dir={os.fspath(self.cache_dir)!r} is not used: preprocess is "
                    f"a callable of your own ({type(preprocess).__name__}) whose behaviour "
                    "cannot be identified, so its embeddings could be confused with "
                    "another preprocessing's. Pass preprocess_key='<a name that changes "
                    "when your preprocessing changes>' to cache on disk.",
                    UserWarning,
                    stacklevel=3,
                )
        else:
            self._image_identity = {
                "model_name": self.model_name, "image_tower": image_digest,
                "preprocess": preprocess_id, "precision": self.precision_,
            }
            self.model_key_ = key_of(self._image_identity)
        tokenizer_id = tokenizer_key(tokenizer)
        self._text_identity = None if tokenizer_id is None else {
            "model_name": self.model_name, "text": text_digest,
            "tokenizer": tokenizer_id, "precision": self.precision_,
        }

    def _set_logit_transform(self, model):
        """``logit_scale_`` (100 without one) and ``logit_bias_`` (None without
        one: softmax scores) of the model."""
        scale = getattr(model, "logit_scale", None)
        self.logit_scale_ = (
            100.0 if scale is None else float(torch.as_tensor(scale).detach().float().exp().mean())
        )
        bias = getattr(model, "logit_bias", None)
        self.logit_bias_ = (
            None if bias is None else float(torch.as_tensor(bias).detach().float().mean())
        )

    def _slug(self):
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.model_name).strip("_")[:40]

    def _encode_prompts(self, prompt_names, templates, synonyms, names, device):
        """``(n_templates, n_classes, dim)`` prompt embeddings, through the caches."""
        prompts, owner = [], []
        for ti, template in enumerate(templates):
            for ci, (name, shown) in enumerate(zip(names, prompt_names)):
                for alias in [shown, *synonyms.get(name, [])]:
                    text = fill(template, alias)
                    if not isinstance(text, str):
                        raise ValueError(
                            f"templates[{ti}] returned {text!r} for the class "
                            f"{alias!r}; a template must return a prompt string."
                        )
                    prompts.append(text)
                    owner.append(ti * len(names) + ci)
        key = None if self._text_identity is None else key_of(self._text_identity)
        root = None
        if key is not None and self.cache_dir is not None:
            root = Path(self.cache_dir) / f"text-{self._slug()}-{key[:16]}"

        def encode(chunk):
            tokens = torch.as_tensor(self.tokenizer_(chunk)).to(device)
            with torch.inference_mode(), self._compute(device):
                out = self.model_.encode_text(tokens)
            return torch.nn.functional.normalize(out.float(), dim=-1).cpu().numpy()

        found = prompt_embeddings(prompts, encode, key=key, identity=self._text_identity,
                                  root=root, batch_size=self.batch_size, verbose=self.verbose)
        feats = torch.from_numpy(np.stack([found[p] for p in prompts]).astype(np.float32))
        owner = torch.as_tensor(owner)
        n_pairs = len(templates) * len(names)
        summed = torch.zeros(n_pairs, feats.shape[1]).index_add_(0, owner, feats)
        summed = torch.nn.functional.normalize(summed, dim=-1)
        return summed.reshape(len(templates), len(names), -1).numpy()

    # ------------------------------------------------------------- embedding

    def _ensure_model(self):
        """The device, with the model loaded (after unpickling) and unchanged since fit."""
        if getattr(self, "model_", None) is None:
            loaded = self._loaded
            if "model" not in loaded:
                self._log("loading the model again to annotate")
                model, preprocess, tokenizer = self._load_model()
                self._place_model(model)
                loaded.update(model=model, preprocess=preprocess, tokenizer=tokenizer)
            self.model_ = loaded["model"]
            self.preprocess_, self.tokenizer_ = loaded["preprocess"], loaded["tokenizer"]
        if model_digests(self.model_)[0] != self._image_digest:
            raise RuntimeError(
                "The image tower's weights are not those the annotator was fitted "
                "with (the model was changed in place, or the checkpoint file was "
                "replaced); call fit again."
            )
        device = resolve_device(self.device)
        current = _module_device(self.model_)
        if current.type != device.type or (
            device.index is not None and current.index != device.index
        ):
            self.model_.to(device)
        return device

    def _disk_cache(self):
        if self.cache_dir is None or self.model_key_ is None:
            return None
        root = Path(self.cache_dir) / f"{self._slug()}-{self.model_key_[:16]}"
        disk = getattr(self, "_disk", None)
        if disk is None or disk.root != root:
            disk = self._disk = DiskCache(root, self._image_identity,
                                          width=self.text_features_.shape[-1])
        disk.refresh()
        return disk

    def _n_workers(self):
        if self.n_jobs is None:
            return min(8, os.cpu_count() or 1)
        if self.n_jobs < 0:
            return max(1, (os.cpu_count() or 1) + 1 + self.n_jobs)
        return self.n_jobs

    def _embed_images(self, X, on_bad_image="raise"):
        """Normalised image embeddings ``(n, embed_dim)`` float32, through the
        caches; rows of NaN for images skipped as unreadable."""
        device = self._ensure_model()
        source = ImageSource(X, draft=draft_size(self.preprocess_))

        def encode(batch):
            with torch.inference_mode(), self._compute(device):
                feats = self.model_.encode_image(batch.to(device))
                return torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()

        return embed_images(
            source, encode, self.preprocess_, self._memory_cache, disk=self._disk_cache(),
            batch_size=self.batch_size, workers=self._n_workers(), verbose=self.verbose,
            on_bad_image=on_bad_image,
        )

    def _text_on(self, device):
        cached = getattr(self, "_text_cache", None)
        if cached is None or cached.device != device:
            cached = torch.from_numpy(self.text_features_).to(device)
            self._text_cache = cached
        return cached

    def _scores(self, X, on_bad_image="raise"):
        """Per-template votes ``(n, d)``, template-averaged scores ``(n, C)``
        and the mask of the images skipped as unreadable (vote -1, uniform
        scores)."""
        emb = self._embed_images(X, on_bad_image)
        unread = np.isnan(emb).any(axis=1)
        emb[unread] = 0
        device = _module_device(self.model_)
        text = self._text_on(device)
        n_templates, n_classes, _ = text.shape
        n = emb.shape[0]
        votes = np.empty((n, n_templates), dtype=np.int64)
        avg = np.empty((n, n_classes), dtype=np.float32)
        rows = max(1, _SCORE_BLOCK // (n_templates * n_classes))
        with torch.inference_mode():
            for start in range(0, n, rows):
                e = torch.from_numpy(emb[start : start + rows]).to(device)
                logits = self.logit_scale_ * torch.einsum("nd,tcd->ntc", e, text)
                if self.logit_bias_ is not None:
                    logits = logits + self.logit_bias_
                    probs = torch.sigmoid(logits)
                else:
                    probs = torch.softmax(logits, dim=-1)
                votes[start : start + rows] = logits.argmax(-1).cpu().numpy()
                avg[start : start + rows] = probs.mean(1).cpu().numpy()
        votes[unread], avg[unread] = -1, 1.0 / n_classes
        return votes, avg, unread

    def _candidates(self, votes, avg):
        n, n_classes = avg.shape
        Y = np.zeros((n, n_classes), dtype=np.uint8)
        rows = np.arange(n)[:, None]
        if self.mode == "multi_prompt":
            Y[rows, votes] = 1
            return Y
        if self.mode == "threshold":
            Y[avg >= self.threshold] = 1
            Y[np.arange(n), avg.argmax(axis=1)] = 1
            return Y
        k = min(self.k, n_classes)
        top = np.argsort(-avg, axis=1, kind="stable")[:, :k]
        if self.mode == "topk":
            Y[rows, top] = 1
            return Y
        top_p = np.take_along_axis(avg, top, axis=1)
        keep = top_p >= self.ratio * top_p[:, :1]
        keep[:, 0] = True
        Y[np.broadcast_to(rows, top.shape)[keep], top[keep]] = 1
        return Y

    # ---------------------------------------------------------------- public

    def annotate(self, X, y=None):
        """Return the candidate matrix of ``X``.

        Also sets ``votes_``, ``proba_`` and ``candidate_stats_``.

        Parameters
        ----------
        X : array-like, list of PIL images, list of paths or Dataset
            Images, in any form :func:`~sklearn_npll._data.inputs.as_input_data`
            accepts (lists of PIL images or paths may mix sizes).
        y : array-like of shape (n_samples,), default=None
            True labels (class names), when known: ``candidate_stats_`` then
            has the coverage and noise rate of the sets.

        Returns
        -------
        candidates : ndarray of shape (n_samples, n_classes), dtype uint8
            0/1 candidate matrix; columns follow ``classes_``.
        """
        check_is_fitted(self, "text_features_")
        votes, avg, unread = self._scores(X, getattr(self, "on_bad_image", "raise"))
        Y = self._candidates(votes, avg)
        Y[unread] = 1  # an image never seen: every class a candidate
        self.votes_ = votes
        self.proba_ = avg / avg.sum(axis=1, keepdims=True)
        self.candidate_stats_ = candidate_stats(Y, y_true=y, classes=self.classes_)
        return Y

    def transform(self, X):
        """Annotate ``X``: its images with candidate sets and per-template votes.

        The annotation is deferred until the candidate sets are first read
        (``.candidates`` or ``.votes``). A classifier's ``predict`` reads only
        the images, so a fitted ``Pipeline`` predicts without running the
        vision-language model on new images; its ``score`` without labels
        reads the candidates and annotates. The deferred annotation uses the
        annotator as it is now (a later ``set_params`` or refit does not
        change it), and pickles. ``fit_transform`` annotates at once.

        Parameters
        ----------
        X : array-like, list of PIL images, list of paths or Dataset
            Images, as for :meth:`annotate`.

        Returns
        -------
        annotated : AnnotatedImages
            ``images`` (``X`` as given), ``candidates`` (n_samples, n_classes)
            0/1, ``classes`` (``classes_``), ``votes`` (n_samples,
            n_templates) class indices and ``proba`` (n_samples, n_classes),
            the template-averaged probabilities (the teacher's soft labels).
        """
        check_is_fitted(self, "text_features_")
        images = X.images if isinstance(X, AnnotatedImages) else X
        return AnnotatedImages(images=images, classes=self.classes_,
                               annotate=_DeferredAnnotation(self._frozen_copy(), images))

    def set_output(self, *, transform=None):
        """Set the output container of :meth:`transform`: only the default one.

        ``transform`` returns :class:`~sklearn_npll.AnnotatedImages`, the
        images together with their candidate sets, because the classifier
        after it trains on both. A pandas or polars table of the candidate
        columns would drop the images, so those containers are refused
        rather than silently ignored; scikit-learn's global
        ``set_config(transform_output=...)`` does not change the output
        either. A table of the sets is
        ``pandas.DataFrame(annotated.candidates, columns=annotator.get_feature_names_out())``.

        Parameters
        ----------
        transform : {"default"} or None, default=None
            ``"default"`` (the container ``transform`` always returns) or
            None (no change).

        Returns
        -------
        self : VLMPartialAnnotator
            The annotator, unchanged.

        Raises
        ------
        ValueError
            For ``"pandas"``, ``"polars"`` or any other container.
        """
        if transform not in (None, "default"):
            raise ValueError(
                f"{type(self).__name__}.set_output(transform={transform!r}) is not supported: "
                "transform returns AnnotatedImages (the images with their candidate sets), "
                "which the classifier after it trains on, and a table of candidate columns "
                "would drop the images. Leave the annotator's output as it is (set the output "
                "of other steps one by one, pipe[i].set_output(...)); for a table of the "
                "sets use pandas.DataFrame(annotated.candidates, "
                "columns=annotator.get_feature_names_out()).")
        return self

    def get_feature_names_out(self, input_features=None):
        """Names of the candidate columns of :meth:`transform`'s output.

        Parameters
        ----------
        input_features : None
            Ignored: images have no feature names. Present for
            scikit-learn's API.

        Returns
        -------
        feature_names_out : ndarray of str objects, shape (n_classes,)
            The class names, in the order of the columns of
            ``AnnotatedImages.candidates`` (``classes_``).
        """
        check_is_fitted(self, "text_features_")
        return np.asarray([str(c) for c in self.classes_], dtype=object)

    def _frozen_copy(self):
        """A shallow copy sharing the model and caches (``copy.copy`` would
        go through ``__getstate__``, which leaves the model out)."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        return twin

    def fit_transform(self, X, y=None):
        """Fit, then annotate ``X`` at once (what a ``Pipeline``'s ``fit`` calls).

        Parameters
        ----------
        X : array-like, list of PIL images, list of paths or Dataset
            Images, as for :meth:`annotate`.
        y : array-like of shape (n_samples,), default=None
            True labels, when known: only used for ``candidate_stats_``
            (coverage and noise rate).

        Returns
        -------
        annotated : AnnotatedImages
            The images with their candidate sets, already computed.
        """
        self.fit(X)
        images = X.images if isinstance(X, AnnotatedImages) else X
        candidates = self.annotate(images, y=y)
        return AnnotatedImages(images=images, candidates=candidates, classes=self.classes_,
                               votes=self.votes_, proba=self.proba_)

    def annotation_report(self, X, y=None):
        """Per-class table of the candidate sets of ``X``.

        Parameters
        ----------
        X : AnnotatedImages or images
            What :meth:`transform` returned (its sets are used), or images to
            annotate.
        y : array-like of shape (n_samples,), default=None
            True labels (class names), when known.

        Returns
        -------
        report : pandas.DataFrame or dict of lists
            One row per class and a last row ``"(all)"`` (a DataFrame indexed
            by class when pandas is installed, else a dict of columns):
            ``in_sets`` (how many sets hold the class), ``mean_set_size``
            (mean size of those sets) and, with ``y``, ``support``,
            ``coverage`` (share of the class's samples whose set holds it),
            ``noise_rate`` and one ``vote_accuracy[<template>]`` column per
            template.
        """
        check_is_fitted(self, "text_features_")
        if isinstance(X, AnnotatedImages):
            candidates, votes = X.candidates, X.votes
        else:
            candidates = self.annotate(X)
            votes = self.votes_
        names = [template_label(t, i) for i, t in enumerate(self.templates_)]
        return annotation_report(candidates, self.classes_, votes=votes, y=y,
                                 template_names=names)

    def embed(self, X):
        """The model's normalised image embeddings of ``X`` (through the caches).

        What a linear probe on the vision-language model trains on; see the
        user guide's "Student and teacher" page for the recipe.

        Parameters
        ----------
        X : array-like, list of PIL images, list of paths or Dataset
            Images, as for :meth:`annotate`.

        Returns
        -------
        embeddings : ndarray of shape (n_samples, embed_dim), dtype float32
            Unit-norm rows.
        """
        check_is_fitted(self, "text_features_")
        if isinstance(X, AnnotatedImages):
            X = X.images
        return self._embed_images(X)

    def predict_proba(self, X):
        """Template-averaged zero-shot class probabilities.

        Parameters
        ----------
        X : array-like, list of PIL images, list of paths or Dataset
            Images, as for :meth:`annotate`.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Rows sum to one; columns follow ``classes_``.
        """
        check_is_fitted(self, "text_features_")
        _, avg, _ = self._scores(X)
        return avg / avg.sum(axis=1, keepdims=True)

    def predict(self, X):
        """Zero-shot class of each image: argmax of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like, list of PIL images, list of paths or Dataset
            Images, as for :meth:`annotate`.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Class names from ``classes_``.
        """
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    # ----------------------------------------------------------- persistence

    def __getstate__(self):
        state = dict(super().__getstate__())
        for name in ("_memory_cache", "_text_cache", "_disk", "_loaded"):
            state.pop(name, None)
        if self.model is None:
            # loaded from model_name / pretrained: loaded again when needed
            for name in ("model_", "preprocess_", "tokenizer_"):
                state.pop(name, None)
        else:
            state.pop("model_", None)  # the same object as the model parameter
            module = state.get("model")
            if isinstance(module, torch.nn.Module) and _module_device(module).type != "cpu":
                state["model"] = _cpu_copy(module)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "text_features_" in state and state.get("model") is not None:
            self.model_ = state["model"]
        self._memory_cache = {}
        self._text_cache = None
        self._disk = None
        self._loaded = {}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.target_tags.required = False
        tags.requires_fit = True
        return tags
