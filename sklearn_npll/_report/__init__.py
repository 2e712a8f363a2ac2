"""Private helpers of :mod:`sklearn_npll.report`: one module per job.

``_collect`` gathers the numbers from a fitted model, ``_plot`` and the
``*_figures`` modules draw them with matplotlib, ``_thumbnails`` embeds
images, ``_sections`` and ``_galleries`` arrange figures, notes and thumbnail
grids into sections (``_page`` holds those building blocks), ``_header`` the
page's header, and ``_html`` writes the self-contained page.
"""
