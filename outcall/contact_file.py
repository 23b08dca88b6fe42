"""Reading a contacts CSV: the header, then every row checked and turned into a contact.

The file needs a phone column (named by the caller, or one of the usual headers); every other
column becomes the contact's variables. Each row's number is normalised to E.164 and placed in
a time zone; a bad row becomes a RowError with its line number and the reason, never a silent
drop.
"""

import codecs
import csv
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_string  # json.dumps's own, in C
from typing import BinaryIO, NamedTuple

from outcall.calling_windows import zone
from outcall.phone_numbers import NumberError, time_zone_for, to_e164

PHONE_COLUMNS = (
    "phone", "phone_number", "phonenumber", "mobile", "mobile_number", "mobile_phone", "cell", "cell_phone",
    "telephone", "tel", "number", "to_number", "msisdn", "contact_number",
)
TIMEZONE_COLUMNS = ("timezone", "time_zone", "tz")
BATCH_ROWS = 2000
MAX_VALUE_CHARS = 1000
ROWS_BETWEEN_PAUSES = 64  # ~0.6 ms of checking on a 2-core CI machine


class ImportRefused(ValueError):
    """The file as a whole cannot be imported (nothing was): no phone column, bad header, encoding."""


@dataclass(frozen=True, slots=True)
class RowError:
    """A row that was not imported, and why."""

    row: int  # line number in the file; the header is line 1
    phone: str
    reason: str


class ContactRow(NamedTuple):
    """A good row, ready to store."""

    line: int
    phone: str  # E.164
    timezone: str
    variables_json: str  # the other columns, as the contacts table's JSON column holds them


@dataclass(frozen=True)
class FileOptions:
    """How to read one file for one campaign."""

    campaign_timezone: str
    default_country: str | None = None
    phone_column: str | None = None
    timezone_column: str | None = None
    encoding: str | None = None
    needed_columns: frozenset[str] = frozenset()  # template placeholders the campaign's variables leave unset


def column_name(header: str, position: int) -> str:
    """A header as a variable name: `First Name` → `first_name`."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", header.strip()).strip("_").lower()
    if not name:
        return f"column_{position + 1}"
    return f"column_{name}" if name[0].isdigit() else name


class _Lines:
    """The file's lines as text, decoded one at a time so a bad byte rejects one row, not the file."""

    def __init__(self, source: BinaryIO, encoding: str | None):
        self.source = source
        self.bad_lines: dict[int, str] = {}
        start = source.read(4)
        self.bytes_read = len(start)
        if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            encoding, self._pending = "utf-16", start
        elif start.startswith(codecs.BOM_UTF8):
            encoding, self._pending = "utf-8", start[3:]
        else:
            if b"\x00" in start and encoding is None:
                raise ImportRefused("the file looks like UTF-16 without a byte-order mark: save it as UTF-8")
            self._pending = start
        self.encoding = encoding or "utf-8"
        try:
            codec = codecs.lookup(self.encoding).name
        except LookupError:
            raise ImportRefused(f"unknown encoding {self.encoding!r}: use utf-8, latin-1, cp1252…") from None
        # Several bytes a character: lines cannot be split on b"\n", so the stream is decoded whole.
        self._wide = codec.startswith(("utf-16", "utf-32"))
        if codec in ("utf-16", "utf-32") and not start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise ImportRefused(
                f"encoding={self.encoding} needs a byte-order mark, which this file lacks: "
                f"name the byte order (utf-16-le or utf-16-be), or save the file as UTF-8"
            )

    def __iter__(self) -> Iterator[str]:
        if self._wide:
            decoder = codecs.getincrementaldecoder(self.encoding)(errors="replace")
            text = decoder.decode(self._pending)
            for chunk in iter(lambda: self.source.read(1 << 16), b""):
                self.bytes_read += len(chunk)
                *lines, text = (text + decoder.decode(chunk)).splitlines(keepends=True) or [""]
                yield from lines
            if text:
                yield text
            return
        first = True
        for line_number, raw in enumerate(self.source, start=1):
            self.bytes_read += len(raw)
            if first:
                raw, first = self._pending + raw, False
            try:
                yield raw.decode(self.encoding)
            except UnicodeDecodeError as e:
                self.bad_lines[line_number] = f"byte 0x{raw[e.start]:02x} at position {e.start + 1}"
                yield raw.decode(self.encoding, errors="replace")


class ContactFile:
    """A contacts CSV, read in batches of checked rows."""

    def __init__(self, source: BinaryIO, options: FileOptions):
        self.options = options
        self._lines = _Lines(source, options.encoding)
        self._reader = csv.reader(self._lines)
        self._last_line = 0
        self._read_header()

    @property
    def bytes_read(self) -> int:
        return self._lines.bytes_read

    def _read_header(self) -> None:
        try:
            header = next(self._reader)
        except StopIteration:
            raise ImportRefused("the file is empty: it needs a header row naming its columns") from None
        except csv.Error as e:
            raise ImportRefused(f"the header row is not valid CSV ({e})") from None
        if self._lines.bad_lines:
            raise ImportRefused(
                f"the header row is not valid {self._lines.encoding} ({self._lines.bad_lines[1]}): "
                f"save the file as UTF-8, or import with encoding=latin-1 (or the file's encoding)"
            )
        self._last_line = self._reader.line_num
        self.columns = [column_name(h, i) for i, h in enumerate(header)]
        repeated = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if repeated:
            raise ImportRefused(f"columns named the same (after lower-casing and _ for spaces): {', '.join(repeated)}")
        self.phone_index = self._find_column(self.options.phone_column, PHONE_COLUMNS, "phone")
        self.timezone_index = self._find_column(self.options.timezone_column, TIMEZONE_COLUMNS, "time zone", False)
        self.variable_columns = [
            (i, name) for i, name in enumerate(self.columns) if i not in (self.phone_index, self.timezone_index)
        ]
        # The variables' JSON object is written as json.dumps writes it (SQLAlchemy's serializer for
        # the JSON column), a member at a time: json.dumps builds an encoder per call, 4 µs a row.
        self._variable_members = [(i, name, f"{_json_string(name)}: ") for i, name in self.variable_columns]
        missing = self.options.needed_columns - {name for _, name in self.variable_columns}
        if missing:
            raise ImportRefused(
                f"the campaign's templates use {', '.join('{' + m + '}' for m in sorted(missing))} but the file has "
                f"no such column and the campaign's variables do not set it (columns: {', '.join(self.columns)})"
            )

    def _find_column(self, given: str | None, usual: tuple[str, ...], what: str, required: bool = True) -> int | None:
        if given:
            name = column_name(given, 0)
            if name not in self.columns:
                raise ImportRefused(f"no column {given!r} in the file; its columns are: {', '.join(self.columns)}")
            return self.columns.index(name)
        for name in usual:
            if name in self.columns:
                return self.columns.index(name)
        if required:
            raise ImportRefused(
                f"no {what} column: name it one of {', '.join(usual)}, or say which column it is "
                f"(phone_column=…); the file's columns are: {', '.join(self.columns)}"
            )
        return None

    def batches(self) -> Iterator[tuple[list[ContactRow], list[RowError]]]:
        """Up to BATCH_ROWS good rows at a time, with the bad rows met on the way.

        Imports read in a thread beside the event loop, and checking rows is pure Python: every
        ROWS_BETWEEN_PAUSES rows the reader gives up the interpreter's lock, so the loop runs
        as soon as it has work (the database's answer, a call's audio) rather than after the
        interpreter's 5 ms switch interval."""
        checked_rows = 0
        while True:
            rows: list[ContactRow] = []
            errors: list[RowError] = []
            while len(rows) < BATCH_ROWS and len(errors) < BATCH_ROWS:
                try:
                    fields = next(self._reader)
                except StopIteration:
                    break
                except csv.Error as e:
                    errors.append(RowError(self._reader.line_num, "", f"not valid CSV ({e})"))
                    continue
                first_line, self._last_line = self._last_line + 1, self._reader.line_num
                if not fields or fields == [""]:
                    continue  # a blank line
                checked = self._check(first_line, fields)
                (rows if isinstance(checked, ContactRow) else errors).append(checked)
                checked_rows += 1
                if checked_rows % ROWS_BETWEEN_PAUSES == 0:
                    time.sleep(0)
            if not rows and not errors:
                return
            yield rows, errors

    def _check(self, line: int, fields: list[str]) -> ContactRow | RowError:
        raw_phone = fields[self.phone_index].strip() if self.phone_index < len(fields) else ""
        bad = self._lines.bad_lines
        bad_bytes = [bad.pop(n) for n in range(line, self._last_line + 1) if n in bad] if bad else None
        if bad_bytes:
            return RowError(
                line, raw_phone,
                f"not valid {self._lines.encoding} ({bad_bytes[0]}): save the file as UTF-8, "
                f"or import with encoding=latin-1 (or the file's encoding)",
            )
        if len(fields) != len(self.columns):
            return RowError(line, raw_phone, f"has {len(fields)} fields but the header has {len(self.columns)}")
        try:
            phone = to_e164(raw_phone, self.options.default_country)
        except NumberError as e:
            return RowError(line, raw_phone, str(e))
        if self.timezone_index is not None and fields[self.timezone_index].strip():
            timezone = fields[self.timezone_index].strip()
            try:
                zone(timezone)
            except ValueError as e:
                return RowError(line, raw_phone, str(e))
        else:
            timezone = time_zone_for(phone, self.options.campaign_timezone)
        members = []
        for index, name, member_name in self._variable_members:
            value = fields[index].strip()
            if len(value) > MAX_VALUE_CHARS:
                return RowError(line, raw_phone, f"{name} is longer than {MAX_VALUE_CHARS} characters")
            members.append(member_name + _json_string(value))
        return ContactRow(line, phone, timezone, "{" + ", ".join(members) + "}")
