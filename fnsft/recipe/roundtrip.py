"""Comment-preserving edits of round-trip YAML (ruamel ``CommentedMap``) for migrate-config and schema upgrades.

ruamel keeps every comment line that follows a value on the *deepest last key* before it: the comment above
``training:`` is stored after the last key of the previous section. Adding, deleting or re-commenting a key with
ruamel's own helpers therefore moves or loses comments that belong to other keys. The helpers here split such a
comment into the key's own end-of-line part and the "following" lines, and keep the following lines in place.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Iterable
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarfloat import ScalarFloat
from ruamel.yaml.tokens import CommentToken

#: Column where generated end-of-line comments start when the key has no comment yet.
EOL_COLUMN = 40
#: Comments written by fnsft start like this, so a later migration replaces them instead of piling them up.
SOURCE_NOTE = "written for the source"
GENERATED_COMMENT = re.compile(rf"^(was |added|removed|upgraded|default made explicit|{SOURCE_NOTE} )")
HEADER_PREFIX = "fnsft migrate-config"


def split_comment(text: str) -> tuple[str | None, str]:
    """Split a stored comment into (end-of-line comment without '#', following lines)."""
    if text.startswith("\n") or not text.lstrip(" ").startswith("#"):
        return None, text.split("\n", 1)[1] if "\n" in text else ""
    first, _, rest = text.partition("\n")
    return first.lstrip(" ")[1:].strip(), rest


def _trailing_slot(node: Any, key: Any) -> tuple[Any, Any, int]:
    """The (container, key, slot index) that holds the comment after ``node[key]`` (and its block)."""
    value = node[key]
    if isinstance(value, CommentedMap) and len(value) and not value.fa.flow_style():
        return _trailing_slot(value, list(value)[-1])
    if isinstance(value, CommentedSeq) and len(value) and not value.fa.flow_style():
        return _trailing_slot(value, len(value) - 1)
    return node, key, 0 if isinstance(node, CommentedSeq) else 2


def _token(node: Any, key: Any, slot: int) -> CommentToken | None:
    entry = node.ca.items.get(key)
    return entry[slot] if entry and len(entry) > slot else None


def _set_token(node: Any, key: Any, slot: int, text: str, column: int) -> None:
    entry = node.ca.items.setdefault(key, [None, None, None, None])
    entry[slot] = CommentToken(text, CommentMark(column)) if text.strip() or text.count("\n") > 1 else None


def _following(node: Any, key: Any) -> str:
    container, inner, slot = _trailing_slot(node, key)
    token = _token(container, inner, slot)
    return split_comment(token.value)[1] if token else ""


def _replace_following(node: Any, key: Any, following: str) -> None:
    container, inner, slot = _trailing_slot(node, key)
    token = _token(container, inner, slot)
    eol = split_comment(token.value)[0] if token else None
    column = token.column if token else 0
    text = (f"# {eol}\n" if eol is not None else "\n") + following
    _set_token(container, inner, slot, text, column)


def eol_comment(node: CommentedMap, key: Any) -> str | None:
    """The end-of-line comment on ``key``'s line (scalar or flow-style value), without '#'."""
    token = _token(node, key, 2)
    return split_comment(token.value)[0] if token else None


def user_eol_comment(node: CommentedMap, key: Any) -> str | None:
    """The user's own end-of-line comment on ``key``'s line (not a note fnsft wrote), without '#'."""
    eol = eol_comment(node, key)
    return eol if eol and not GENERATED_COMMENT.match(eol) else None


def set_eol_comment(node: CommentedMap, key: Any, note: str, indent: int = 0, *, keep_user: bool = True) -> None:
    """Put ``note`` at the end of ``key``'s line, keeping the user's own comment after it (unless ``keep_user``
    is false: the note replaces it).

    ``indent`` is the key's column, used to place the comment of a key that was not read from a file.
    """
    token = _token(node, key, 2)
    eol, following = split_comment(token.value) if token else (None, "")
    if eol and keep_user and not GENERATED_COMMENT.match(eol):
        note = f"{note}  # {eol}"
    column = token.column if token and eol is not None else _eol_column(node, key, indent)
    _set_token(node, key, 2, f"# {note}\n{following}", column)


def strip_generated_comments(node: Any) -> None:
    """Drop the notes an earlier fnsft migration wrote on each line, keeping the user's comment after them."""
    children = node.items() if isinstance(node, CommentedMap) else enumerate(node) if isinstance(node, CommentedSeq) else ()
    for key, value in children:
        strip_generated_comments(value)
        slot = 0 if isinstance(node, CommentedSeq) else 2
        token = _token(node, key, slot)
        eol, following = split_comment(token.value) if token else (None, "")
        if token is None or eol is None or not GENERATED_COMMENT.match(eol):
            continue
        _, _, user = eol.partition("  # ")
        _set_token(node, key, slot, (f"# {user}\n" if user else "\n") + following, token.column)


def _eol_column(node: CommentedMap, key: Any, indent: int) -> int:
    """Line up generated comments at EOL_COLUMN, or two spaces after a longer line."""
    with contextlib.suppress(KeyError, TypeError, AttributeError):  # a key added in memory: the caller's indent
        indent = node.lc.key(key)[1]
    return max(EOL_COLUMN, indent + len(str(key)) + 2 + len(dump_value(node[key])) + 2)


def dump_value(value: Any) -> str:
    """A value as it appears after ``key:`` (one line for scalars and flow lists)."""
    out = io.StringIO()
    YAML(typ="rt").dump([value], out)
    return out.getvalue().strip().removeprefix("- ").split("\n")[0]


def comments_above(node: CommentedMap, key: Any) -> list[str]:
    """The full-line comments right above ``key`` (without '#'); for the first key they are the file header."""
    keys = list(node)
    position = keys.index(key)
    if position == 0:
        return []
    lines = _following(node, keys[position - 1]).splitlines()
    return [line.strip()[1:].strip() for line in lines if line.strip().startswith("#")]


def set_comments_above(node: CommentedMap, key: Any, lines: list[str], indent: int) -> None:
    """Put full-line comments right above ``key`` (ruamel's own before-key slot, so they move with the key)."""
    if lines:
        node.yaml_set_comment_before_after_key(key, before="\n".join(lines), indent=indent)


def insert_key(node: CommentedMap, key: str, value: Any, order: Iterable[str]) -> None:
    """Add ``key`` after its nearest predecessor in ``order`` (schema order) that the map has, else first."""
    order = list(order)
    before = order[: order.index(key)] if key in order else order
    present = [k for k in node if k in before]
    previous = max(present, key=before.index) if present else None
    if previous is None:
        node.insert(0, key, value)
        return
    following = _following(node, previous)
    _replace_following(node, previous, "")
    node.insert(list(node).index(previous) + 1, key, value)
    _replace_following(node, key, following)


def delete_key(node: CommentedMap, key: str) -> None:
    """Remove ``key`` (and its block), keeping comment lines that belong to the keys after it."""
    keys = list(node)
    position = keys.index(key)
    try:
        own_column = node.lc.key(key)[1]
    except (KeyError, TypeError, AttributeError):
        own_column = 0
    # Lines indented deeper than the key belong to its own block and go with it.
    kept = "".join(
        line
        for line in _following(node, key).splitlines(keepends=True)
        if not line.strip() or len(line) - len(line.lstrip(" ")) <= own_column
    )
    del node[key]
    node.ca.items.pop(key, None)
    if position == 0:
        return
    previous = keys[position - 1]
    # The comment block right above the key (same indentation, no blank line between) describes it: drop it too.
    above = _following(node, previous).splitlines(keepends=True)
    while above and above[-1].strip().startswith("#") and len(above[-1]) - len(above[-1].lstrip(" ")) == own_column:
        above.pop()
    _replace_following(node, previous, "".join(above) + kept)


def format_float(value: float) -> str:
    """A float the way people write hyperparameters, exactly: ``5.0e-5``, ``1.25e-4``, ``0.1``, ``2.0``.

    Small values use the shortest exact scientific spelling; the mantissa always has a dot, so YAML 1.1 readers
    (PyYAML) also read a float, not a string.
    """
    value = float(value)
    if value == 0 or abs(value) >= 1e-3 or value != value:
        return repr(value)
    digits = next(p for p in range(17) if float(f"{value:.{p}e}") == value)
    mantissa, exponent = f"{value:.{digits}e}".split("e")
    return f"{mantissa}{'' if '.' in mantissa else '.0'}e{int(exponent)}"


def yaml_value(value: Any) -> Any:
    """A value ready to store in round-trip YAML: lists on one line, floats spelt by :func:`format_float`."""
    if isinstance(value, list):
        return flow_list(value)
    if isinstance(value, float):
        return YAML(typ="rt").load(format_float(value))  # a ScalarFloat that keeps this spelling when dumped
    return value


def flow_list(items: Iterable[Any]) -> CommentedSeq:
    """A list written on one line (``[a, b]``), so a comment can sit at the end of that line."""
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def set_header(root: CommentedMap, lines: list[str],
               marks: Callable[[list[str]], dict[int, str]] | None = None) -> None:
    """Replace fnsft's header lines at the top of the file (previous ones included), keeping the user's.

    ``marks`` maps the user's header lines to {index: note}: each note becomes an fnsft line before that line.
    """
    comment = root.ca.comment
    if comment is None:
        root.ca.comment = comment = [None, []]
    if comment[1] is None:
        comment[1] = []
    user_tokens = [t for t in comment[1] if not t.value.lstrip("# ").startswith(HEADER_PREFIX)]
    notes = marks([t.value for t in user_tokens]) if marks else {}
    ours = [CommentToken(f"# {line}\n", CommentMark(0)) for line in lines]
    kept = []
    for index, token in enumerate(user_tokens):
        if index in notes:
            kept.append(CommentToken(f"# {HEADER_PREFIX}: {notes[index]}\n", CommentMark(0)))
        kept.append(token)
    comment[1] = ours + kept


class _ExactFloatRepresenter(RoundTripRepresenter):
    """ruamel re-spells a loaded float from its original width and can drop its last digit
    (5.960464477539063e-08 → ...062e-08); fall back to Python's shortest exact spelling when that happens."""

    def represent_scalar_float(self, data: ScalarFloat) -> Any:
        node = super().represent_scalar_float(data)
        with contextlib.suppress(ValueError):  # .inf, .nan and other YAML-only spellings are exact already
            if float(node.value.replace("_", "")) != float(data):
                node.value = repr(float(data))
        return node


_ExactFloatRepresenter.add_representer(ScalarFloat, _ExactFloatRepresenter.represent_scalar_float)


def roundtrip_yaml() -> YAML:
    """A round-trip YAML instance for writing recipes (2-space maps, lists indented under their key)."""
    yaml = YAML(typ="rt")
    yaml.Representer = _ExactFloatRepresenter
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # never fold long values or comments
    return yaml


def dump(root: Any) -> str:
    out = io.StringIO()
    roundtrip_yaml().dump(root, out)
    return out.getvalue()
