"""Find the first problem of a local data file, as one line naming the file (and the line).

`datasets` reports a malformed file with a traceback that names neither; this module
reads the file itself, once, streaming: `first_problem(path, builder, name)` before
`datasets` reads it, and with `parse=True` after `datasets` failed on it.

Text files (json/jsonl, csv/tsv, txt; plain or .gz/.bz2/.xz compressed) must decompress
to the end, be UTF-8, and hold a non-blank line; a CSV needs a row after its header. With
`parse=True`, JSON is parsed too: line by line (JSON lines), or whole where the file is
one document (it starts with `[`, or neither of its first two lines is JSON on its own).
A parquet file's footer must read and count rows. Arrow files are left to `datasets`.

Parsing JSON costs about as much as `datasets`' own first load; the other checks (UTF-8,
decompression) a tenth of it, so only they run on every load: a broken JSON line always
makes `datasets` fail, and the parse then says where.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import json
import lzma
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

CHUNK_BYTES = 1 << 22  # read 4 MiB at a time, then on to the end of the line
COMPRESSIONS = {".gz": ("gzip", gzip.open), ".bz2": ("bz2", bz2.open), ".xz": ("xz", lzma.open)}
# What a truncated or corrupt compressed stream raises while it is read.
CORRUPT_STREAM = (EOFError, OSError, zlib.error, lzma.LZMAError)
TEXT_BUILDERS = ("json", "csv", "text")


def first_problem(path: Path, builder: str, name: str, *, parse: bool = False) -> str | None:
    """The first problem of the file at `path` that `datasets` reads with `builder`
    ("json", "csv", "text", "parquet" or "arrow"), as one line starting with `name`
    (e.g. "data.path='pairs.jsonl'"); None when none is found. `parse`: parse JSON too."""
    if builder == "parquet":
        problem = _parquet_problem(path)
    elif builder in TEXT_BUILDERS:
        problem = _text_problem(path, builder, parse)
    else:
        problem = None
    return f"{name} {problem}" if problem else None


def _text_problem(path: Path, builder: str, parse: bool) -> str | None:
    suffix = path.suffix.lower()
    compression, opener = COMPRESSIONS.get(suffix, (None, open))
    inner = Path(path.stem).suffix.lower() if compression else suffix
    scan = _TextScan(builder, parse=parse, delimiter="\t" if inner == ".tsv" else ",")
    try:
        stream = opener(path, "rb")
    except OSError as error:
        return f"cannot be read ({error.strerror or _first_line(error)})"
    with stream:
        try:
            for chunk in _chunks(stream):
                problem = scan.feed(chunk)
                if problem:
                    return problem
        except CORRUPT_STREAM as error:
            if compression is None:
                return f"cannot be read ({_first_line(error)})"
            return f"is a truncated or corrupt {compression} file ({_first_line(error)})"
    return scan.finish()


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """The stream's bytes in chunks of whole lines (the last may lack its newline)."""
    while True:
        chunk = stream.read(CHUNK_BYTES)
        if not chunk:
            return
        yield chunk + stream.readline()


class _TextScan:
    """The checks of a text file, fed its chunks in order."""

    def __init__(self, builder: str, *, parse: bool, delimiter: str) -> None:
        self.builder = builder
        self.parse = parse and builder == "json"
        self.delimiter = delimiter
        self.lines = 0  # lines before the current chunk
        self.started = False
        self.nonblank: list[str] = []  # the first two non-blank lines
        # JSON whose first line is an array or no JSON value alone: the text, read whole, may
        # be one document; if not, and its second line is JSON alone, it is JSON lines.
        self.document: list[str] | None = None
        self.first_problem: str | None = None
        self.second_parses = False

    def feed(self, chunk: bytes) -> str | None:
        if not self.started:
            self.started = True
            chunk = chunk.removeprefix(codecs.BOM_UTF8)  # datasets and pandas skip it too
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as error:
            return self._not_utf8(chunk, error.start)
        if self.document is not None:
            self.document.append(text)
        if len(self.nonblank) < 2 or (self.parse and self.document is None):
            problem = self._lines(text)
            if problem:
                return problem
        self.lines += text.count("\n")
        return None

    def finish(self) -> str | None:
        if not self.nonblank:
            return "is empty: no records"
        if self.builder == "csv" and len(self.nonblank) == 1:
            header = next(csv.reader([self.nonblank[0]], delimiter=self.delimiter))
            return f"has a header ({', '.join(header)}) but no rows"
        if self.document is not None:
            try:
                json.loads("".join(self.document))
            except json.JSONDecodeError as error:
                if self.first_problem and (self.second_parses or len(self.nonblank) == 1):
                    return self.first_problem  # JSON lines, the first of them broken
                return _not_json(error.lineno, error)
        return None

    def _lines(self, text: str) -> str | None:
        for index, line in enumerate(text.split("\n")):
            if not line.strip():
                continue
            if len(self.nonblank) < 2:
                self.nonblank.append(line)
            if not self.parse:
                if len(self.nonblank) == 2:
                    return None
                continue
            problem = _json_problem(line, self.lines + index + 1)
            if len(self.nonblank) == 1:
                if problem or line.lstrip().startswith("["):
                    # newlines for the blank lines before it keep the document's line numbers
                    self.document = ["\n" * self.lines, text]
                    self.first_problem = problem
                continue
            if self.document is not None:  # the second line: read on as a document
                self.second_parses = problem is None
                return None
            if problem:
                return problem
        return None

    def _not_utf8(self, chunk: bytes, start: int) -> str:
        line_start = chunk.rfind(b"\n", 0, start) + 1
        number = self.lines + chunk.count(b"\n", 0, start) + 1
        column = len(chunk[line_start:start].decode("utf-8")) + 1  # valid up to `start`
        return f"line {number} is not UTF-8 text (byte 0x{chunk[start]:02x} at column {column})"


def _json_problem(line: str, number: int) -> str | None:
    try:
        json.loads(line)
    except json.JSONDecodeError as error:
        return _not_json(number, error)
    return None


def _not_json(number: int, error: json.JSONDecodeError) -> str:
    return f"line {number} is not valid JSON ({error.msg}: column {error.colno})"


def _parquet_problem(path: Path) -> str | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.ParquetFile(path).metadata.num_rows  # the footer alone
    except (pa.ArrowException, OSError) as error:
        return f"is not a readable parquet file ({_first_line(error)})"
    return None if rows else "is empty: no records"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
