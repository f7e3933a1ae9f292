"""What the model is trained on, row by row: the rendered text with the trained characters marked.

Three views of the same :class:`PreviewRow` list: rich text for a terminal, plain text with ``[[ ]]`` markers
when the output is not a terminal, a self-contained HTML page for sharing, and JSON for tools. Everything goes
through the loss-mask code training uses (``encode_row``), so what is shown is what is trained.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from fnsft.data.check import encode_row

PLAIN_OPEN, PLAIN_CLOSE = "[[", "]]"
TRAINED_STYLE = "bold black on green"


@dataclass(frozen=True)
class PreviewRow:
    where: str
    text: str
    spans: list[tuple[int, int]]  # trained characters of ``text``
    input_ids: list[int]
    mask: list[int]

    def to_json(self) -> dict[str, Any]:
        return {"row": self.where, "text": self.text, "trained_spans": [list(s) for s in self.spans],
                "input_ids": self.input_ids, "mask": self.mask}


def preview_rows(tokenizer: Any, rows: list[dict], wheres: list[str], **options: Any) -> list[PreviewRow]:
    """One preview per canonical row (``wheres`` names each, e.g. 'data.jsonl:3 (row 3)')."""
    previews = []
    for row, where in zip(rows, wheres, strict=True):
        encoded = encode_row(tokenizer, row, **options)
        if encoded.rendering is not None:
            text = encoded.rendering.text
            spans = list(encoded.rendering.spans) if options.get("responses_only", True) else [(0, len(text))]
        else:  # raw text: every token is trained
            text, spans = row["text"], [(0, len(row["text"]))]
        previews.append(PreviewRow(where, text, spans, encoded.input_ids, encoded.assistant_masks))
    return previews


def _pieces(row: PreviewRow) -> list[tuple[str, bool]]:
    """The text cut into (piece, trained) runs."""
    pieces, cursor = [], 0
    for start, end in sorted(row.spans):
        if start > cursor:
            pieces.append((row.text[cursor:start], False))
        pieces.append((row.text[start:end], True))
        cursor = end
    if cursor < len(row.text):
        pieces.append((row.text[cursor:], False))
    return pieces


def plain(row: PreviewRow, *, ids: bool = False) -> str:
    body = "".join(f"{PLAIN_OPEN}{piece}{PLAIN_CLOSE}" if trained else piece for piece, trained in _pieces(row))
    lines = [f"── {row.where}: {len(row.input_ids)} tokens, {sum(row.mask)} trained " + "─" * 8, body]
    if ids:
        lines.append(_ids_line(row))
    return "\n".join(lines)


def _ids_line(row: PreviewRow) -> str:
    return "ids:  " + " ".join(f"{token}{'*' if bit else ''}" for token, bit in zip(row.input_ids, row.mask, strict=True))


def rich_text(row: PreviewRow, *, ids: bool = False):
    from rich.text import Text

    text = Text()
    text.append(f"── {row.where}: {len(row.input_ids)} tokens, {sum(row.mask)} trained\n", style="bold")
    for piece, trained in _pieces(row):
        text.append(piece, style=TRAINED_STYLE if trained else "dim")
    if ids:
        text.append("\n" + _ids_line(row), style="cyan")
    return text


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fnsft data preview</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; background: #fafafa; color: #222; }}
pre {{ white-space: pre-wrap; word-break: break-word; background: #fff; border: 1px solid #ccc; padding: 1em;
       font-size: 14px; line-height: 1.5; }}
.t {{ background: #9be29b; color: #000; font-weight: bold; }}
.u {{ color: #888; }}
h2 {{ font-size: 15px; margin-top: 1.5em; }}
.ids {{ font-family: monospace; font-size: 12px; color: #555; }}
</style></head><body>
<h1>fnsft data preview</h1>
<p>{summary}. <span class="t">Highlighted</span> characters are trained (loss on them); grey ones are context only.</p>
{rows}
</body></html>
"""


def html_page(rows: list[PreviewRow], summary: str, *, ids: bool = False) -> str:
    """A self-contained page (no scripts, no external files) with the same view as the terminal."""
    parts = []
    for row in rows:
        body = "".join(f'<span class="{"t" if trained else "u"}">{html.escape(piece)}</span>'
                       for piece, trained in _pieces(row))
        parts.append(f"<h2>{html.escape(row.where)}: {len(row.input_ids)} tokens, {sum(row.mask)} trained</h2>"
                     f"<pre>{body}</pre>")
        if ids:
            parts.append(f'<p class="ids">{html.escape(_ids_line(row))}</p>')
    return PAGE.format(summary=html.escape(summary), rows="\n".join(parts))
