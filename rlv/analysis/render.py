"""A report as a list of blocks, rendered to Markdown and to one self-contained HTML file.

Building the content once as blocks keeps the two outputs saying the same thing. HTML embeds
every image as a base64 data URI and uses inline CSS only, so the file can be mailed or archived
alone; Markdown links the PNG files written next to it.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True, eq=False)
class Table:
    frame: pd.DataFrame  # already formatted as text: renderers do no number formatting
    caption: str = ""


@dataclass(frozen=True)
class Picture:
    path: Path
    caption: str = ""


@dataclass(frozen=True)
class PictureGrid:
    """Images in a table: one row per cell label, one column per header (None: no image)."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, tuple[Path | None, ...]], ...]
    caption: str = ""


Block = Heading | Para | Table | Picture | PictureGrid

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th { background: #f3f3f3; }
caption { caption-side: top; text-align: left; font-weight: bold; padding: 0.3em 0; }
img { max-width: 100%; }
figure { margin: 1em 0; }
td.img { padding: 2px; text-align: center; }
"""


def flat(frame: pd.DataFrame) -> pd.DataFrame:
    """Index levels become columns; MultiIndex column labels are joined with a space."""
    out = frame.reset_index() if _has_named_index(frame) else frame.copy()
    out.columns = [
        " ".join(str(p) for p in c if str(p)) if isinstance(c, tuple) else str(c)
        for c in out.columns
    ]
    return out


def _has_named_index(frame: pd.DataFrame) -> bool:
    return any(name is not None for name in frame.index.names)


def _md_cell(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN: blank
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block], base: Path) -> str:
    """Markdown; image paths relative to `base` (the folder the .md file is written to)."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Para):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            table = flat(block.frame)
            if block.caption:
                lines += [f"*{block.caption}*", ""]
            lines.append("| " + " | ".join(_md_cell(c) for c in table.columns) + " |")
            lines.append("|" + "---|" * len(table.columns))
            for row in table.itertuples(index=False):
                lines.append("| " + " | ".join(_md_cell(v) for v in row) + " |")
            lines.append("")
        elif isinstance(block, Picture):
            lines += [f"![{block.caption}]({block.path.relative_to(base).as_posix()})", ""]
        else:
            if block.caption:
                lines += [f"*{block.caption}*", ""]
            lines.append("| | " + " | ".join(block.headers) + " |")
            lines.append("|---|" + "---|" * len(block.headers))
            for label, paths in block.rows:
                cells = [f"![]({p.relative_to(base).as_posix()})" if p else "" for p in paths]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def data_uri(path: Path) -> str:
    """The PNG file as a data URI, so the HTML needs no other file."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def to_html(blocks: list[Block], title: str) -> str:
    """One HTML page with inline CSS and every image embedded."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            if block.caption:
                parts.append(f"<p><b>{html.escape(block.caption)}</b></p>")
            parts.append(flat(block.frame).to_html(index=False, border=0, na_rep=""))
        elif isinstance(block, Picture):
            parts.append(
                f'<figure><img src="{data_uri(block.path)}" alt="{html.escape(block.caption)}">'
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
            )
        else:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
            rows = []
            for label, paths in block.rows:
                cells = "".join(
                    f'<td class="img"><img src="{data_uri(p)}" alt=""></td>' if p else "<td></td>"
                    for p in paths
                )
                rows.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
            caption = f"<caption>{html.escape(block.caption)}</caption>" if block.caption else ""
            parts.append(f"<table>{caption}<tr><th></th>{head}</tr>{''.join(rows)}</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
