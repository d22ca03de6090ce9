"""Files made to attack a reader, shared by the tests of the CLI and of the server."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG at path whose header claims width x height pixels, with almost no pixel data: a
    decoder that trusts the header allocates it all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path
