"""Plain-text helpers for corpora: a small regex sentence splitter and a wikitext-markup stripper."""

from __future__ import annotations

import html
import re

Document = list[str]
"""One document: its sentences in order."""

_BOUNDARY = re.compile(r"""([.!?]+["'”’)\]]*)\s+(?=["'“‘(\[]?[A-Z0-9])""")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs e.g i.e no nos fig figs inc ltd co corp gen col lt sgt capt "
    "rev mt ft approx ca c cf al jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k".split()
)


def _ends_with_abbreviation(text: str) -> bool:
    words = text.split()
    word = words[-1].lstrip("([\"'").lower() if words else ""
    return (len(word) == 1 and word.isalpha()) or word in _ABBREVIATIONS


def split_sentences(text: str) -> list[str]:
    """Split a paragraph at . ! ? before a capitalised word, except after abbreviations and initials (good enough here)."""
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(text):
        if match.group(1).startswith(".") and _ends_with_abbreviation(text[start : match.start(1)]):
            continue
        sentences.append(text[start : match.end(1)].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


_COMMENT = re.compile(r"<!--[\s\S]*?-->")
_TAG_WITH_BODY = re.compile(
    r"<(ref|math|gallery|timeline|imagemap|score|syntaxhighlight|source|chem|code)\b[^>]*?(?:/>|>[\s\S]*?</\1\s*>)",
    re.IGNORECASE,
)
_INNERMOST_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_INNERMOST_TABLE = re.compile(r"\{\|(?:(?!\{\|)[\s\S])*?\|\}")
_INNERMOST_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_NAMESPACE = re.compile(r"^\s*:?[\w -]+:(?!\s)")
_EXTERNAL_LINK = re.compile(r"\[(?:https?:)?//[^\s\]]+\s*([^\]]*)\]")
_HTML_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_EMPHASIS = re.compile(r"'{2,}")
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_PARENS_LEADING_PUNCT = re.compile(r"\(\s*[,;:][\s,;:]*")  # "(;, Helios" once a language template is gone
_EMPTY_PARENS = re.compile(r"\(\s*(?:born\b)?[\s,;:]*\)")  # e.g. "(born )" once a date template is gone
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.;:!?])")
_HEADING = re.compile(r"^=+\s*(.*?)\s*=+$")
_RESIDUE = re.compile(r"\[\[|\]\]|\{\{|\}\}")  # markup left by malformed or exotic constructs
_END_SECTIONS = frozenset(
    "references|see also|external links|further reading|notes|bibliography|sources|footnotes|citations".split("|")
)


def _link_text(match: re.Match[str]) -> str:
    target, *labels = match.group(1).split("|")
    return "" if _NAMESPACE.match(target) else (labels[-1] if labels else target)


def _remove_nested(text: str) -> str:
    previous = None
    while previous != text:
        previous = text
        text = _INNERMOST_TABLE.sub("", _INNERMOST_TEMPLATE.sub("", text))
        text = _INNERMOST_LINK.sub(_link_text, text)
    return text


def strip_wikitext(markup: str) -> list[str]:
    """Reduce an article's wikitext to prose paragraphs: no templates, tables, refs, files, lists, headings, references."""
    text = _TAG_WITH_BODY.sub("", _COMMENT.sub("", markup))
    text = _EXTERNAL_LINK.sub(r"\1", _remove_nested(text))
    text = html.unescape(_MAGIC_WORD.sub("", _EMPHASIS.sub("", _HTML_TAG.sub("", text))))
    paragraphs = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        heading = _HEADING.match(line)
        if heading and heading.group(1).lower() in _END_SECTIONS:
            break
        if heading or not line or line[0] in "*#|!{}":
            continue
        line = _EMPTY_PARENS.sub("", _PARENS_LEADING_PUNCT.sub("(", line.lstrip(":; ")))
        line = _SPACE_BEFORE_PUNCT.sub(r"\1", line)
        line = " ".join(line.split())
        if any(ch.isalpha() for ch in line) and not _RESIDUE.search(line):
            paragraphs.append(line)
    return paragraphs
