"""The report index: one list of blocks rendered to ``index.md`` and a static ``index.html``.

Keeping the content as data (headings, paragraphs, tables, images, links) means the Markdown and
the HTML always list the same files and notes.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import re
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


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Image:
    path: str
    caption: str
    links: tuple[str, ...] = ()


@dataclass(frozen=True)
class Markdown:
    """A pre-rendered Markdown table plus the frame it came from (for the HTML)."""

    text: str
    frame: pd.DataFrame
    bold: pd.DataFrame | None = None


Block = Heading | Para | Bullets | Code | Image | Markdown


def blocks_from_markdown(text: str) -> list[Block]:
    """Hand-written Markdown (headings, paragraphs, ``-`` lists) as blocks, so both renderers show it.

    Chunks are separated by blank lines; a list item's continuation lines are indented. Nothing
    else of Markdown is read: inline links and backticks pass through as in our own notes.
    """
    blocks: list[Block] = []
    for chunk in re.split(r"\n\s*\n", text.strip()):
        lines = [line.rstrip() for line in chunk.splitlines() if line.strip()]
        if not lines:
            continue
        heading = re.match(r"(#{1,6})\s+(.*)", lines[0])
        if heading and len(lines) == 1:
            blocks.append(Heading(heading.group(2), len(heading.group(1))))
        elif lines[0].lstrip().startswith("- "):
            items: list[str] = []
            for line in lines:
                if line.lstrip().startswith("- "):
                    items.append(line.lstrip()[2:].strip())
                elif items:
                    items[-1] += " " + line.strip()
            blocks.append(Bullets(items))
        else:
            blocks.append(Para(" ".join(line.strip() for line in lines)))
    return blocks


def _md_link(path: str) -> str:
    return f"[{path}]({path})"


def render_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items) if b.items else "- (none)")
        elif isinstance(b, Code):
            out.append(f"```\n{b.text}\n```")
        elif isinstance(b, Image):
            links = " · ".join(_md_link(p) for p in b.links)
            out.append(f"![{b.caption}]({b.path})\n\n*{b.caption}*" + (f" ({links})" if links else ""))
        elif isinstance(b, Markdown):
            out.append(b.text.rstrip())
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Markdown links and backticks in our own notes -> HTML (nothing more is used)."""
    text = html.escape(text)
    text = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _html_table(frame: pd.DataFrame, bold: pd.DataFrame | None) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [frame.index.name or "", *frame.columns])
    body = []
    for row, cells in frame.iterrows():
        tds = [f"<th>{html.escape(str(row))}</th>"]
        for c, v in cells.items():
            text = html.escape(str(v))
            tds.append(f"<td><b>{text}</b></td>" if bold is not None and bool(bold.loc[row, c]) else f"<td>{text}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
th,td{border-bottom:1px solid #ccc;padding:3px 8px;text-align:right}
thead th{border-bottom:2px solid #444}th:first-child{text-align:left}figure{margin:1em 0}img{max-width:100%}
pre{background:#f5f5f5;padding:.6em;overflow-x:auto}figcaption{font-style:italic;font-size:13px}"""


def _data_uri(path: str, folder: Path | None) -> str:
    """The image inlined as a ``data:`` URI (MLflow's artifact viewer does not resolve relative links)."""
    file = folder / path if folder is not None else None
    if file is None or not file.is_file():
        return path
    kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(file.read_bytes()).decode('ascii')}"


def render_html(blocks: list[Block], title: str, embed_from: Path | None = None) -> str:
    """One HTML page; with ``embed_from`` (the report folder) its images are embedded: self-contained."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items or ["(none)"]) + "</ul>")
        elif isinstance(b, Code):
            out.append(f"<pre>{html.escape(b.text)}</pre>")
        elif isinstance(b, Image):
            links = " · ".join(f'<a href="{html.escape(p)}">{html.escape(p)}</a>' for p in b.links)
            src = html.escape(_data_uri(b.path, embed_from))
            out.append(f'<figure><img src="{src}" alt="{html.escape(b.caption)}">'
                       f"<figcaption>{html.escape(b.caption)} {links}</figcaption></figure>")
        elif isinstance(b, Markdown):
            out.append(_html_table(b.frame, b.bold))
    out.append("</body></html>")
    return "\n".join(out) + "\n"
