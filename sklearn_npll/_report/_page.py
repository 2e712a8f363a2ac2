"""The building blocks of a report page, independent of HTML."""

from dataclasses import dataclass, field


@dataclass
class Table:
    """Numbers behind a figure: ``rows`` of cells under ``columns``."""

    columns: list
    rows: list
    row_header: str = ""


@dataclass
class FigureItem:
    """A figure (PNG data URI) with its title, a caption saying how to read
    it, and optionally its numbers as a table."""

    title: str
    caption: str
    src: str
    table: Table = None
    wide: bool = False
    width: int = None  # display width in CSS pixels (the PNG has more, for sharpness)


@dataclass
class Note:
    """A line saying what was left out and why."""

    text: str


@dataclass
class Tile:
    """One thumbnail with its caption lines."""

    src: str
    name: str
    title: str
    student: str
    teacher: str = None
    candidates: str = None
    disputed: bool = False
    pixelated: bool = False


@dataclass
class Gallery:
    """A grid of thumbnails, in groups (one per class, or a single group)."""

    title: str
    caption: str
    groups: list = field(default_factory=list)  # (heading or None, [Tile])
    footnote: str = None


@dataclass
class Section:
    """A titled part of the page: ``key`` is its HTML id."""

    key: str
    title: str
    intro: str
    items: list = field(default_factory=list)


@dataclass
class Header:
    """Title, headline numbers, summary sentence and model description."""

    title: str
    stats: list  # (label, value) pairs shown as tiles
    summary: str
    facts: list  # (label, value) pairs: data and model
