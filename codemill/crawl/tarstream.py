"""A streaming tar reader for archives nobody vetted: what a header can cost is bounded, and the end of
the archive is checked.

CPython's tarfile reads a GNU long-name or pax header whole, whatever size it declares (a 1 GiB header
costs gigabytes), parses pax records with a regular expression that is quadratic on digits
(CVE-2024-6232 on the Python codemill runs), and ends iteration silently at a bad checksum, a garbage
header or an archive cut at a header boundary. This reader:

- refuses an extended header (GNU `L`/`K`, pax `x`/`g`/`X`) over `MAX_EXTENDED_HEADER_BYTES` before
  reading it, and a chain of more than `MAX_EXTENDED_HEADERS` of them before one member;
- parses pax records in one linear pass (the length field is at most `MAX_PAX_LENGTH_DIGITS` digits);
- raises `TarFormatError` for a bad checksum, a truncated header or member, or an archive that ends
  without its end-of-archive block: the caller can tell a whole archive from a damaged one;
- reports, with each member, every byte the archive spends on it (extended headers and data, for all
  member types, unknown ones included), so a caller can cap the total;
- reads file data only as far as asked, and skips the rest in bounded chunks.

Formats: v7, ustar (with its name prefix), GNU (long names, base-256 numbers, sparse headers) and pax.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

BLOCK = 512
# Real long names and pax records are at most a few KiB (PATH_MAX is 4 KiB); 64 KiB leaves room for
# every key a real archive sets and keeps a hostile header's cost small.
MAX_EXTENDED_HEADER_BYTES = 64 * 1024
# GNU L + K, a global and a local pax header: real archives have at most four before a member.
MAX_EXTENDED_HEADERS = 8
MAX_PAX_LENGTH_DIGITS = 20
SKIP_CHUNK = 64 << 10  # skipped data passes through memory in chunks this small

REGULAR = frozenset(b"0\x007")           # regular file, old-style regular file, contiguous file
HARDLINK, SYMLINK, DIRECTORY = b"1", b"2", b"5"
NO_DATA = frozenset(b"123456")           # links, devices, folders and fifos carry no data
GNU_LONGNAME, GNU_LONGLINK, GNU_SPARSE = b"L", b"K", b"S"
PAX_LOCAL, PAX_GLOBAL, SOLARIS_PAX = b"x", b"g", b"X"


class TarFormatError(tarfile.TarError):
    """The archive is damaged or hostile from this point on."""


@dataclass
class TarEntry:
    name: str
    type: bytes            # the one-byte typeflag
    size: int              # data bytes that follow the header
    linkname: str
    stored_bytes: int      # everything the archive spends on this member: its headers and its data

    @property
    def is_regular(self) -> bool:
        return self.type[0] in REGULAR


def _number(field: bytes, what: str) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # GNU base-256, for values octal cannot hold
        if field[0] == 0xFF:
            raise TarFormatError(f"negative {what} in a header")
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarFormatError(f"the header's {what} is not a number") from None


def _text(field: bytes) -> str:
    return field.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def _checksum_ok(block: bytes) -> bool:
    stored = _number(block[148:156], "checksum")
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = unsigned - 256 * sum(b > 127 for b in block[:148] + block[156:])  # some writers sum signed bytes
    return stored in (unsigned, signed)


def parse_pax(data: bytes) -> dict[str, str]:
    """`%d key=value\\n` records, in one pass; anything malformed raises TarFormatError."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos, pos + MAX_PAX_LENGTH_DIGITS + 1)
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise TarFormatError("a pax record does not start with its length")
        end = pos + int(digits)
        if end > len(data) or end <= space + 2 or data[end - 1:end] != b"\n":
            raise TarFormatError("a pax record's length does not match its content")
        key, eq, value = data[space + 1:end - 1].partition(b"=")
        if not eq:
            raise TarFormatError("a pax record has no '='")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return records


class TarReader:
    """Iterate the members of the tar stream `raw` (decompressed already), in order. While a member is
    current, `read(n)` gives up to n more bytes of its data; moving on skips the rest."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self._left = 0       # data bytes of the current member not read yet
        self._padding = 0    # bytes after its data up to the next block

    def _read_upto(self, n: int) -> bytes:
        first = self.raw.read(n)
        if len(first) == n or not first:
            return first  # the usual case, without a copy
        chunks, want = [first], n - len(first)
        while want and (chunk := self.raw.read(want)):
            chunks.append(chunk)
            want -= len(chunk)
        return b"".join(chunks)

    def _read_exact(self, n: int, what: str) -> bytes:
        data = self._read_upto(n)
        if len(data) < n:
            raise TarFormatError(f"the archive ends inside {what}")
        return data

    def _skip(self, n: int, what: str) -> None:
        while n:
            n -= len(self._read_exact(min(n, SKIP_CHUNK), what))

    def read(self, n: int) -> bytes:
        data = self._read_exact(min(n, self._left), "a member's data")
        self._left -= len(data)
        return data

    def _finish_member(self) -> None:
        self._skip(self._left + self._padding, "a member's data")
        self._left = self._padding = 0

    def _extended(self, size: int, kind: str) -> bytes:
        if size > MAX_EXTENDED_HEADER_BYTES:
            raise TarFormatError(f"a {kind} header of {size} bytes (more than {MAX_EXTENDED_HEADER_BYTES})")
        data = self._read_exact(size, f"a {kind} header")
        self._skip(-size % BLOCK, f"a {kind} header")
        return data

    def __iter__(self) -> Iterator[TarEntry]:
        global_pax: dict[str, str] = {}
        while True:
            pending: dict[str, str] = {}
            spent = extended = 0
            while True:
                block = self._read_upto(BLOCK)
                if not block:
                    raise TarFormatError("the archive ends without its end-of-archive block (cut short?)")
                if len(block) < BLOCK:
                    raise TarFormatError("the archive ends inside a header")
                if block == bytes(BLOCK):
                    if pending or extended:
                        raise TarFormatError("extended headers with no member after them")
                    return  # the end-of-archive block: the whole archive was read
                if not _checksum_ok(block):
                    raise TarFormatError("a header's checksum is wrong (a damaged or garbage header)")
                spent += BLOCK
                kind, size = block[156:157], _number(block[124:136], "size")
                if kind in (GNU_LONGNAME, GNU_LONGLINK, PAX_LOCAL, PAX_GLOBAL, SOLARIS_PAX):
                    extended += 1
                    if extended > MAX_EXTENDED_HEADERS:
                        raise TarFormatError(f"more than {MAX_EXTENDED_HEADERS} extended headers before a member")
                    data = self._extended(size, "GNU long name" if kind in (GNU_LONGNAME, GNU_LONGLINK) else "pax")
                    spent += size
                    if kind == GNU_LONGNAME:
                        pending["path"] = _text(data)
                    elif kind == GNU_LONGLINK:
                        pending["linkpath"] = _text(data)
                    elif kind == PAX_GLOBAL:
                        global_pax.update(parse_pax(data))
                    else:
                        pending.update(parse_pax(data))
                    continue
                break
            entry = self._entry(block, kind, size, {**global_pax, **pending})
            if kind == GNU_SPARSE and block[482]:
                spent += self._skip_sparse_extensions()
            entry.stored_bytes = spent + entry.size
            self._left, self._padding = entry.size, -entry.size % BLOCK
            yield entry
            self._finish_member()

    def _entry(self, block: bytes, kind: bytes, size: int, pax: dict[str, str]) -> TarEntry:
        name = _text(block[0:100])
        if block[257:263] == b"ustar\x00" and block[345]:  # POSIX ustar: a prefix holds the name's start
            name = _text(block[345:500]) + "/" + name
        if "size" in pax:
            if not pax["size"].isdigit():
                raise TarFormatError("a pax size is not a number")
            size = int(pax["size"])
        name = pax.get("path", name)
        if kind == b"\x00" and name.endswith("/"):  # v7 archives mark folders by a trailing slash only
            kind = DIRECTORY
        data_size = 0 if kind[0] in NO_DATA else size
        return TarEntry(name, kind, data_size, pax.get("linkpath", _text(block[157:257])), 0)

    def _skip_sparse_extensions(self) -> int:
        """GNU sparse members may be followed by blocks of more sparse map entries."""
        spent = 0
        while True:
            block = self._read_exact(BLOCK, "a sparse header")
            spent += BLOCK
            if spent > MAX_EXTENDED_HEADERS * BLOCK * 64:
                raise TarFormatError("a sparse map of too many blocks")
            if not block[504]:
                return spent
