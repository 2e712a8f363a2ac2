"""Sphinx configuration of the sklearn_npll documentation.

Build it from the repository root with::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The API reference is generated from the ``__all__`` lists of the package and
of its public modules (see ``_api.py``); the gallery in ``examples/`` runs at
build time.
"""

import os
import re
import sys
import warnings
from pathlib import Path

# The examples are small: one thread each is fastest and keeps CI predictable
# (set before torch is imported); matplotlib draws without a display.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the checkout, when it is not installed

import sklearn_npll  # noqa: E402
from _api import IGNORED_CHECKS, data_names, is_documented_member, write_api_page  # noqa: E402

project = "sklearn-npll"
author = "the sklearn-npll developers"
copyright = "the sklearn-npll developers"
release = sklearn_npll.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",  # pages written in Markdown
    "sphinx_gallery.gen_gallery",
    "matplotlib.sphinxext.plot_directive",
]

templates_path = ["_templates"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "examples", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.json", "auto_examples/*.md5"]
html_theme = "pydata_sphinx_theme"
html_title = f"sklearn-npll {release}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_static_path = []

# -- API reference: one page per public name, from the __all__ lists --------
write_api_page(HERE / "api.rst")
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": True}


def skip_member(app, what, name, obj, skip, options):
    """Document the members :func:`_api.is_documented_member` selects."""
    cls = _current_class.get("cls")
    if what not in ("class", "exception") or skip or cls is None:
        return skip
    return None if is_documented_member(cls, name) else True


_current_class = {}


def remember_class(app, what, name, obj, options, signature, return_annotation):
    if what in ("class", "exception"):
        _current_class["cls"] = obj


def setup(app):
    app.connect("autodoc-process-signature", remember_class)
    app.connect("autodoc-skip-member", skip_member)
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
# Every check numpydoc knows, except the conventions listed in _api.py;
# tests/test_docstrings.py runs the same validation without building the site.
numpydoc_validation_checks = {"all", *IGNORED_CHECKS, "EX01"}
# Constructors are documented in their class docstring; numpydoc cannot
# validate module-level data (a tuple of templates has the docstring of tuple).
numpydoc_validation_exclude = {r"\.__init__$", *(rf"^{re.escape(name)}$" for name in data_names())}

# -- Figures of the user guide (``.. plot::``) -------------------------------
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 100)]
plot_rcparams = {"figure.autolayout": True}
plot_pre_code = "import numpy as np\nimport matplotlib.pyplot as plt\n"

# -- Gallery --------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",  # run every example
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "backreferences_dir": "generated/backreferences",
    "doc_module": ("sklearn_npll",),
    "reset_modules": ("matplotlib",),
    "abort_on_example_error": True,
    "show_memory": False,
    "remove_config_comments": True,
    "min_reported_time": 1,
}

intersphinx_mapping = {}  # the build must work offline

warnings.filterwarnings("ignore", message="Matplotlib is currently using agg")
