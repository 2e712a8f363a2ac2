"""The command-line program's parts: reading what the user points to
(photos, class names, verified labels), the RUN folder, and the train,
predict, report and verify steps. :mod:`sklearn_npll.cli` parses the
arguments and calls them."""
