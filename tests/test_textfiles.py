"""Users' text: lines end only at \\n or \\r\\n, and bytes that are not UTF-8 are one error naming source, line, byte."""

import codecs
import io

import pytest

from minimoe.errors import MiniMoEError
from minimoe.textfiles import decode_utf8, read_lines, split_lines

# Characters str.splitlines() (and text-mode stdin, for \r) would end a line at.
SEPARATORS = ["\u2028", "\u2029", "\x85", "\f", "\v", "\x1c", "\x1d", "\x1e", "\r"]


def test_lines_end_only_at_newline_and_crlf():
    text = "".join(f"a{sep}b\n" for sep in SEPARATORS) + "crlf\r\n\n  \nlast without a newline"
    lines = split_lines(text)
    assert lines == [f"a{sep}b" for sep in SEPARATORS] + ["crlf", "", "  ", "last without a newline"]
    assert len(text.splitlines()) > len(lines)  # what the old reader split into
    assert split_lines("") == [] and split_lines("\n") == [""] and split_lines("x\n") == ["x"]


def test_file_and_stream_read_the_same_lines(tmp_path):
    data = "\ufeffhead\r\nmid\u2028dle\n\nend\r".encode()
    (tmp_path / "in.txt").write_bytes(data)
    assert read_lines(tmp_path / "in.txt") == read_lines("-", io.BytesIO(data)) == ["head", "mid\u2028dle", "", "end\r"]


def test_non_utf8_names_the_source_line_and_byte():
    with pytest.raises(MiniMoEError, match=r"^stdin:2: not UTF-8 text \(byte 0xe9 at offset 9: invalid continuation"):
        decode_utf8(codecs.BOM_UTF8 + "ab\ncafé\n".encode("latin-1"), "stdin")
    assert decode_utf8("\ufeffcafé".encode(), "x") == "café"  # a leading byte-order mark is dropped
