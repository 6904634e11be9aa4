"""Users' text files and stdin: UTF-8 with one error naming the source, line and byte; lines split only at \\n.

`str.splitlines` also splits at \\r, \\v, \\f, \\x1c-\\x1e, \\x85, U+2028 and U+2029, and a text-mode stdin turns
a bare \\r into a line end, so neither keeps "one line in, one line out" on arbitrary text.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import BinaryIO

from minimoe.errors import MiniMoEError


def decode_utf8(data: bytes, source: str) -> str:
    """The text of UTF-8 bytes (a leading byte-order mark dropped), or one error naming the source, line and byte."""
    body = data.removeprefix(codecs.BOM_UTF8)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        line = body.count(b"\n", 0, err.start) + 1
        offset = err.start + len(data) - len(body)
        raise MiniMoEError(
            f"{source}:{line}: not UTF-8 text (byte 0x{body[err.start]:02x} at offset {offset}: {err.reason}); "
            "convert it to UTF-8"
        ) from None


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's content, with one clear error when it is missing or not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise MiniMoEError(f"{path}: file not found")
    return decode_utf8(path.read_bytes(), str(path))


def split_lines(text: str) -> list[str]:
    """The lines of a text, ended by \\n or \\r\\n only; a final line end closes the last line, it opens none."""
    *ended, last = text.split("\n")
    return [line.removesuffix("\r") for line in ended] + ([last] if last else [])


def read_lines(path: str | Path, stream: BinaryIO | None = None) -> list[str]:
    """Every line of a UTF-8 file, or of a binary `stream` (e.g. sys.stdin.buffer, named "stdin"), blank ones kept."""
    text = decode_utf8(stream.read(), "stdin") if stream is not None else read_text(path)
    return split_lines(text)
