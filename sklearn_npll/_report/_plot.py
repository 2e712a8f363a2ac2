"""matplotlib helpers: figures made without pyplot (the user's backend and
global state are left alone) and encoded as PNG data URIs."""

import base64
import io

INSTALL_HINT = 'pip install "sklearn-npll[report]"'

# colours of the page, used by every figure
STUDENT = "#2f6db5"
TEACHER = "#d9822b"
NETWORK_B = "#6a51a3"
NEUTRAL = "#8c959f"
GOOD = "#2e8b57"
WIDE = 10.0  # width in inches of a figure that spans the page
DPI = 110  # CSS pixels per inch of a figure on the page
SHARPNESS = 1.6  # the PNG holds this many pixels per CSS pixel


def require_matplotlib():
    """Import matplotlib, or raise an ImportError saying how to install it."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "The report draws its figures with matplotlib, which is not installed. "
            f"Install the report extra: {INSTALL_HINT}") from exc


def new_figure(width, height, layout="constrained"):
    """A matplotlib Figure of ``width`` x ``height`` inches, not registered
    with pyplot (so no window, no global figure list). ``layout="compressed"``
    suits square cells (``imshow``)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout=layout)


def tidy(ax, grid="y"):
    """Light styling: no top/right spines, a faint grid behind the data."""
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#b0b7bf")
    ax.tick_params(colors="#3d444d", labelsize=9)
    if grid:
        ax.grid(axis=grid, color="#e6e9ed", linewidth=0.8)
        ax.set_axisbelow(True)
    ax.xaxis.label.set_color("#3d444d")
    ax.yaxis.label.set_color("#3d444d")


def to_data_uri(fig):
    """The figure as a ``data:image/png;base64,...`` URI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI * SHARPNESS, facecolor="white",
                metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def css_width(fig):
    """Width of the figure on the page, in CSS pixels."""
    return int(round(fig.get_size_inches()[0] * DPI))


def class_label_size(n_classes):
    """Tick label font size that keeps ``n_classes`` labels readable."""
    return 9 if n_classes <= 15 else 7 if n_classes <= 40 else 5
