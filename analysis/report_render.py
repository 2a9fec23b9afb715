"""The report's blocks (text, tables, figures, app links) and their rendering: Markdown, and HTML
from the Jinja template ``templates/report.html.j2`` (autoescaped: records hold untrusted text)."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import pandas as pd


@dataclass(frozen=True)
class Table:
    """A table of display strings."""

    frame: pd.DataFrame


@dataclass(frozen=True)
class Image:
    """A PNG figure: linked from report.md, embedded in report.html."""

    path: Path
    caption: str


@dataclass
class Section:
    """A titled part of the report; its blocks render in order."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2  # heading level: 2 for sections, 3 for subsections


@dataclass(frozen=True)
class AppLinks:
    """Per group of a table, links to its episodes in ``valuegym serve`` (HTML only, shown when
    the app answers at ``app_url``): ``(group label, [(job, run directory, episode filters)])``."""

    app_url: str
    groups: list[tuple[str, list[tuple[str, str, dict[str, str]]]]]


Block = str | Table | Image | Section | AppLinks


def render_markdown(sections: Sequence[Section], out: Path) -> str:
    """The report as Markdown; figures are linked relative to ``out``."""
    lines = ["# valuegym analysis", ""]
    for section in sections:
        lines.extend(_markdown_section(section, out))
    return "\n".join(lines).rstrip() + "\n"


def _markdown_section(section: Section, out: Path) -> list[str]:
    lines = [f"{'#' * section.level} {section.title}", ""]
    for block in section.blocks:
        if isinstance(block, Section):
            lines.extend(_markdown_section(block, out))
        elif isinstance(block, Table):
            frame = block.frame
            lines.append("| " + " | ".join(_md_cell(column) for column in frame.columns) + " |")
            lines.append("|" + "---|" * len(frame.columns))
            lines.extend(
                "| " + " | ".join(_md_cell(cell) for cell in row) + " |"
                for row in frame.itertuples(index=False)
            )
            lines.append("")
        elif isinstance(block, AppLinks):
            continue  # links to a running app belong to the HTML report only
        elif isinstance(block, Image):
            lines.extend(
                [
                    f"![{block.caption}]({block.path.relative_to(out).as_posix()})",
                    "",
                    f"*{block.caption}*",
                    "",
                ]
            )
        else:
            lines.extend([block, ""])
    return lines


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_html(sections: Sequence[Section]) -> str:
    """The report as one self-contained HTML page (figures embedded), from ``templates/report.html.j2``."""
    return _TEMPLATES.get_template("report.html.j2").render(sections=sections) + "\n"


def _png_base64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,  # titles, cells and captions are text from the records
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=False,
)
_TEMPLATES.filters.update(png_base64=_png_base64, json=json.dumps)
_TEMPLATES.tests.update(
    section=lambda block: isinstance(block, Section),
    table=lambda block: isinstance(block, Table),
    image=lambda block: isinstance(block, Image),
    app_links=lambda block: isinstance(block, AppLinks),
)
