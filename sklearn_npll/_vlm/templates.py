"""Prompt templates and the class names that go into them."""

__all__ = ["SMALL_TEMPLATES", "TEMPLATE_SETS", "prompt_name", "resolve_templates", "fill"]

#: The 27 prompt templates of the reference annotator ("small" set).
SMALL_TEMPLATES = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
)



def _imagenet():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    # open_clip's templates are name-independent lambdas: kept as strings so
    # that a fitted annotator pickles
    return [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]


def _simple():
    from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES

    return [t("{}") for t in SIMPLE_IMAGENET_TEMPLATES]


#: Named template sets: ``"small"`` (27, the reference default), ``"imagenet"``
#: (open_clip's 80 ImageNet templates), ``"imagenet-simple"`` (open_clip's 7).
TEMPLATE_SETS = {
    "small": lambda: list(SMALL_TEMPLATES),
    "imagenet": _imagenet,
    "imagenet-simple": _simple,
}


def prompt_name(name):
    """How a class name reads in a prompt: underscores become spaces.

    >>> prompt_name("maple_tree")
    'maple tree'
    """
    return " ".join(name.replace("_", " ").split())


def fill(template, name):
    """The prompt of ``template`` (a string with ``{}`` or a callable) for ``name``."""
    if callable(template):
        return template(name)
    return template.replace("{}", name)


def resolve_templates(templates, probe_name="object"):
    """The list of templates: strings with one ``{}`` or callables name -> prompt."""
    if isinstance(templates, str):
        return TEMPLATE_SETS[templates]()
    templates = list(templates)
    if not templates:
        raise ValueError("templates is an empty list; give at least one template.")
    for i, t in enumerate(templates):
        if isinstance(t, str):
            if t.count("{}") != 1:
                raise ValueError(
                    f"templates[{i}]={t!r} must contain exactly one '{{}}' "
                    "placeholder for the class name, e.g. 'a photo of a {}'."
                )
        elif callable(t):
            text = t(probe_name)
            if not isinstance(text, str) or not text.strip():
                raise ValueError(
                    f"templates[{i}] is a callable that does not map a class "
                    f"name to a prompt string (got {text!r} for {probe_name!r})."
                )
        else:
            raise TypeError(
                f"templates[{i}] is a {type(t).__name__}; templates must be "
                "strings with '{}' or callables."
            )
    return templates


def template_label(template, index):
    """A readable name of a template for reports."""
    if isinstance(template, str):
        return template
    name = getattr(template, "__name__", "")
    return f"template {index}" if not name or name == "<lambda>" else name
