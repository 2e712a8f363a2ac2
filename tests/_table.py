r"""The table of reliability cases in benchmarks/RELIABILITY.md: each test
that tries a group of cases renders its section and fails when the file's
section differs. Regenerate with

    NPLL_UPDATE_RELIABILITY=1 python -m pytest tests/test_reliability.py \
        tests/test_checkpoints.py tests/test_kill_resume.py \
        tests/test_skorch_callbacks.py tests/test_true_warnings.py \
        tests/test_model_selection.py tests/test_annotator_output.py \
        tests/test_reader.py tests/test_reproducibility.py
"""

import difflib
import os
import re
import warnings
from pathlib import Path

TABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "RELIABILITY.md"
UPDATE = bool(os.environ.get("NPLL_UPDATE_RELIABILITY"))
_IGNORED = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def _clean(text, paths=()):
    for path in paths:
        text = text.replace(str(path), "<dir>")
    text = re.sub(r"epoch-(\d+)-[0-9a-f]{8}", r"epoch-\1-<id>", text)
    return " ".join(text.split()).replace("|", "\\|")


def outcome(action, paths=()):
    """What a user sees when running ``action()``: ``fits`` (or the string
    it returns), the warnings it raised, or the exception it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = action() or "fits"
        except Exception as exc:  # the outcome is what the table records
            result = f"{type(exc).__name__}: {exc}"
    notes = dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught
                          if not issubclass(w.category, _IGNORED))
    return _clean("; ".join([result, *notes]), paths)


def _render(name, rows):
    lines = [f"<!-- section: {name} -->", "", "| case | outcome |", "| --- | --- |"]
    lines += [f"| {case} | {result} |" for case, result in rows]
    return "\n".join(lines + ["", f"<!-- end: {name} -->"])


def check_section(name, rows):
    """Assert that the table's section ``name`` lists exactly ``rows``
    (``(case, outcome)`` pairs); rewrite it instead with
    ``NPLL_UPDATE_RELIABILITY=1``."""
    text = TABLE.read_text()
    pattern = re.compile(rf"<!-- section: {re.escape(name)} -->.*?<!-- end: {re.escape(name)} -->",
                         re.S)
    fresh = _render(name, rows)
    if UPDATE:
        if pattern.search(text):
            text = pattern.sub(lambda _: fresh, text)
        else:
            text = text.rstrip("\n") + f"\n\n### {name}\n\n{fresh}\n"
        TABLE.write_text(text)
        return
    found = pattern.search(text)
    stale = "\n".join(difflib.unified_diff(
        found.group(0).splitlines() if found else [], fresh.splitlines(), "file", "run",
        lineterm=""))
    assert found and not stale, (
        f"The section '{name}' of benchmarks/RELIABILITY.md is stale: regenerate it with "
        "NPLL_UPDATE_RELIABILITY=1 (see tests/_table.py).\n" + stale)
