"""Write the report's page: one self-contained HTML document (inline CSS, no
script, every image a data URI)."""

from html import escape

from ._page import FigureItem, Gallery, Note, Table

CSS = """
:root{--ink:#1f2328;--muted:#59636e;--line:#d8dee4;--bg:#f3f5f8;--student:#2f6db5;
--teacher:#d9822b;--good:#2e8b57}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.wrap{max-width:1180px;margin:0 auto;padding:0 24px}
header.top{background:linear-gradient(135deg,#1d3557,#2f6db5);color:#fff;padding:28px 0 26px}
h1{margin:0;font-size:27px;font-weight:650;letter-spacing:-.01em}
.sub{opacity:.8;font-size:13px;margin-top:2px}
.stats{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;
margin:20px 0 0}
.stat{background:rgba(255,255,255,.13);border-radius:10px;padding:10px 14px}
.stat b{display:block;font-size:27px;font-weight:650;line-height:1.2}
.stat span{font-size:12.5px;opacity:.88}
.summary{font-size:16.5px;margin:18px 0 0;max-width:62em}
nav{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line)}
nav a{display:inline-block;padding:10px 14px 9px;color:var(--muted);text-decoration:none;
font-size:14px;border-bottom:2px solid transparent}
nav a:hover{color:var(--student);border-bottom-color:var(--student)}
section.card{background:#fff;border:1px solid var(--line);border-radius:12px;
padding:20px 26px 24px;margin:22px 0;scroll-margin-top:50px}
h2{margin:0 0 4px;font-size:21px;font-weight:650}
.intro{color:var(--muted);margin:0 0 16px;max-width:62em}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:6px 18px;margin:0;font-size:14px}
dl.facts dt{font-weight:600;color:var(--muted)}
dl.facts dd{margin:0;overflow-wrap:anywhere}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:22px 28px}
figure{margin:0;min-width:0}
figure.wide{grid-column:1/-1}
figure h3,.gallery h3{font-size:15.5px;margin:0 0 6px;font-weight:600}
figure img{display:block;max-width:100%;height:auto}
figcaption{font-size:13.5px;color:var(--muted);margin-top:6px;max-width:60em}
.note{grid-column:1/-1;background:#f6f8fa;border-left:4px solid #afb8c1;border-radius:4px;
padding:8px 12px;color:var(--muted);font-size:14px}
details{margin-top:6px;font-size:13px}
summary{cursor:pointer;color:var(--student)}
table{border-collapse:collapse;margin-top:6px;font-variant-numeric:tabular-nums}
th,td{border:1px solid var(--line);padding:2px 8px;text-align:right}
th{background:#f6f8fa;font-weight:600}
.gallery{margin-top:22px}
.empty{color:var(--muted);font-size:14px;margin:14px 0 0}
.gallery h4{margin:14px 0 6px;font-size:14px;color:var(--muted);font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(128px,1fr));gap:10px}
.tile{border:1px solid var(--line);border-radius:8px;overflow:hidden;background:#fff;
font-size:11.5px}
.tile.disputed{border-color:var(--teacher);box-shadow:0 0 0 1.5px var(--teacher)}
.tile img,.tile .missing{display:block;width:100%;aspect-ratio:1/1;object-fit:contain;
background:#161b22}
.tile .missing{color:#8c959f;display:flex;align-items:center;justify-content:center}
.tile img.px{image-rendering:pixelated}
.cap{padding:5px 7px 6px;line-height:1.35}
.cap div{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.cap div.c{white-space:normal}
.s{color:var(--student);font-weight:650}.t{color:var(--teacher)}.c,.n{color:var(--muted)}
.tile:not(.disputed) .t{color:var(--good)}
footer{color:var(--muted);font-size:12.5px;padding:8px 0 30px}
"""


def render(header, sections, footer):
    """The whole page as a string."""
    nav = "".join(f'<a href="#{s.key}">{escape(s.title)}</a>' for s in sections)
    body = "".join(_section(s) for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<title>{escape(header.title)}</title><style>{CSS}</style></head><body>"
        f"{_header(header)}<nav><div class=\"wrap\">{nav}</div></nav>"
        f"<main class=\"wrap\">{_facts(header)}{body}</main>"
        f"<footer class=\"wrap\">{escape(footer)}</footer></body></html>\n")


def _header(header):
    stats = "".join(f'<div class="stat"><b>{escape(v)}</b><span>{escape(k)}</span></div>'
                    for k, v in header.stats)
    return (f'<header class="top"><div class="wrap"><h1>{escape(header.title)}</h1>'
            '<div class="sub">Training report of a classifier learned from candidate label '
            'sets</div>'
            f'<div class="stats">{stats}</div><p class="summary">{escape(header.summary)}</p>'
            "</div></header>")


def _facts(header):
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in header.facts)
    return (f'<section class="card" id="overview"><h2>Data and model</h2>'
            f'<dl class="facts">{rows}</dl></section>')


def _section(section):
    figures, galleries = [], []
    for item in section.items:
        if isinstance(item, Gallery):
            galleries.append(_gallery(item))
        elif isinstance(item, FigureItem):
            figures.append(_figure(item))
        elif isinstance(item, Note):
            (galleries if galleries else figures).append(
                f'<p class="note">{escape(item.text)}</p>')
        else:
            raise TypeError(f"Unknown report item {type(item).__name__}.")
    return (f'<section class="card" id="{escape(section.key)}"><h2>{escape(section.title)}'
            f'</h2><p class="intro">{escape(section.intro)}</p>'
            f'<div class="figs">{"".join(figures)}</div>{"".join(galleries)}</section>')


def _figure(item):
    table = "" if item.table is None else (
        f"<details><summary>The numbers</summary>{_table(item.table)}</details>")
    width = f' width="{item.width}"' if item.width else ""
    return (f'<figure class="{"wide" if item.wide else ""}"><h3>{escape(item.title)}</h3>'
            f'<img src="{item.src}"{width} alt="{escape(item.title)}">'
            f"<figcaption>{escape(item.caption)}</figcaption>{table}</figure>")


def _table(table):
    head = "".join(f"<th>{escape(str(c))}</th>" for c in [table.row_header, *table.columns])
    rows = "".join("<tr><th>" + escape(str(row[0])) + "</th>"
                   + "".join(f"<td>{escape(str(v))}</td>" for v in row[1:]) + "</tr>"
                   for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _gallery(gallery):
    groups = []
    for heading, tiles in gallery.groups:
        title = f"<h4>{escape(heading)}</h4>" if heading else ""
        groups.append(f'{title}<div class="grid">{"".join(_tile(t) for t in tiles)}</div>')
    if gallery.footnote:
        groups.append(f'<p class="empty">{escape(gallery.footnote)}</p>')
    return (f'<div class="gallery"><h3>{escape(gallery.title)}</h3>'
            f'<p class="intro">{escape(gallery.caption)}</p>{"".join(groups)}</div>')


def _tile(tile):
    if tile.src is None:
        image = '<div class="missing">unreadable</div>'
    else:
        sharp = ' class="px"' if tile.pixelated else ""
        image = f'<img src="{tile.src}" alt="{escape(tile.name)}"{sharp}>'
    lines = [f'<div class="s">student: {escape(tile.student)}</div>']
    if tile.teacher is not None:
        lines.append(f'<div class="t">teacher: {escape(tile.teacher)}</div>')
    if tile.candidates is not None:
        lines.append(f'<div class="c">set: {escape(tile.candidates)}</div>')
    lines.append(f'<div class="n">{escape(tile.name)}</div>')
    return (f'<div class="tile{" disputed" if tile.disputed else ""}" '
            f'title="{escape(tile.title)}">{image}<div class="cap">{"".join(lines)}</div></div>')
