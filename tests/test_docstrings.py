"""numpydoc validation of every documented public name, as the docs build runs
it, without building the site."""

import sys
from pathlib import Path

import pytest

validate = pytest.importorskip("numpydoc.validate", reason="needs the docs extra")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
from _api import IGNORED_CHECKS, documented_objects, public_modules, public_names  # noqa: E402

import sklearn_npll  # noqa: E402

OBJECTS = documented_objects()


def errors_of(dotted, is_member):
    """numpydoc's complaints, less the ignored checks; every class and function
    needs an Examples section, a method need not."""
    ignored = IGNORED_CHECKS | ({"EX01"} if is_member else set())
    return [(code, msg) for code, msg in validate.validate(dotted)["errors"]
            if code not in ignored]


@pytest.mark.parametrize("dotted, is_member", OBJECTS, ids=[name for name, _ in OBJECTS])
def test_docstring_passes_numpydoc_validation(dotted, is_member):
    errors = errors_of(dotted, is_member)
    assert not errors, "\n".join(f"{dotted}: {code} {msg}" for code, msg in errors)


def test_reference_covers_every_public_name():
    documented = {name for names in public_names().values() for name in names}
    for name in sklearn_npll.__all__:
        assert f"sklearn_npll.{name}" in documented
    for module_name in public_modules():
        module = sys.modules[module_name]
        for name in getattr(module, "__all__", []):
            assert (f"sklearn_npll.{name}" in documented
                    or f"{module_name}.{name}" in documented), f"{module_name}.{name}"


def test_estimators_document_their_user_api_but_not_training_hooks():
    names = {name for name, _ in OBJECTS}
    for method in ("fit", "predict", "predict_proba", "score"):
        assert f"sklearn_npll.CoRegClassifier.{method}" in names
    assert "sklearn_npll.CoRegClassifier.run_epoch" not in names
    assert "sklearn_npll.CoRegClassifier.get_params" not in names      # scikit-learn's
    assert "sklearn_npll.CoRegClassifier.initialize_module" not in names  # a skorch override
