"""Stand-in shared libraries: tiny, valid ELF objects that name the libraries they need.

``write_stub_library(path, needed=["libnvinfer.so.10"])`` writes an x86-64 ELF shared object
with those ``DT_NEEDED`` entries and nothing else (no code, one null symbol). The dynamic
loader treats it like any library: ``dlopen`` fails with ``libnvinfer.so.10: cannot open
shared object file`` while that library is missing and succeeds once a library of that name
can be found. This is how tests check the provider checks of ``raypipe doctor`` on a machine
without CUDA or TensorRT, without a compiler.

Layout (one read/write ``PT_LOAD`` segment at address 0 holding the whole file): ELF
header, three program headers (``PT_LOAD``, ``PT_DYNAMIC``, ``PT_GNU_STACK`` non-executable),
``.dynstr``, a one-entry ``.dynsym``, a SysV ``.hash`` with one bucket, ``.dynamic``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

_PT_LOAD, _PT_DYNAMIC, _PT_GNU_STACK = 1, 2, 0x6474E551
_DT_NULL, _DT_NEEDED, _DT_HASH, _DT_STRTAB, _DT_SYMTAB = 0, 1, 4, 5, 6
_DT_STRSZ, _DT_SYMENT, _DT_SONAME = 10, 11, 14
_PF_RW = 4 | 2
_EHDR, _PHDR, _SYM = 64, 56, 24


def stub_library_bytes(needed: Sequence[str], soname: str | None = None) -> bytes:
    """The bytes of an x86-64 ELF shared object that needs ``needed`` (see the module doc)."""
    names = [*needed, *([soname] if soname else [])]
    if any(not n or "\0" in n or "/" in n for n in names):
        raise ValueError(f"library names must be non-empty file names, got {names!r}")
    strtab = b"\0"
    offsets = {}
    for name in names:
        offsets[name] = len(strtab)
        strtab += name.encode() + b"\0"
    strtab_at = _EHDR + 3 * _PHDR
    symtab_at = _align(strtab_at + len(strtab), 8)
    hash_at = symtab_at + _SYM
    dynamic_at = _align(hash_at + 16, 8)
    entries = [(_DT_NEEDED, offsets[n]) for n in needed]
    if soname:
        entries.append((_DT_SONAME, offsets[soname]))
    entries += [
        (_DT_HASH, hash_at),
        (_DT_STRTAB, strtab_at),
        (_DT_SYMTAB, symtab_at),
        (_DT_STRSZ, len(strtab)),
        (_DT_SYMENT, _SYM),
        (_DT_NULL, 0),
    ]
    dynamic = b"".join(struct.pack("<qQ", tag, value) for tag, value in entries)
    size = dynamic_at + len(dynamic)
    header = struct.pack(
        "<4sBBBBB7sHHIQQQIHHHHHH",
        b"\x7fELF",
        2,  # 64-bit
        1,  # little endian
        1,  # ELF version
        0,  # System V ABI
        0,
        b"\0" * 7,
        3,  # ET_DYN
        62,  # EM_X86_64
        1,
        0,  # no entry point
        _EHDR,  # program headers right after this header
        0,  # no section headers
        0,
        _EHDR,
        _PHDR,
        3,
        64,
        0,
        0,
    )
    programs = struct.pack("<IIQQQQQQ", _PT_LOAD, _PF_RW, 0, 0, 0, size, size, 0x1000)
    programs += struct.pack(
        "<IIQQQQQQ", _PT_DYNAMIC, _PF_RW, dynamic_at, dynamic_at, dynamic_at, len(dynamic),
        len(dynamic), 8,
    )  # fmt: skip
    programs += struct.pack("<IIQQQQQQ", _PT_GNU_STACK, _PF_RW, 0, 0, 0, 0, 0, 16)
    body = bytearray(size)
    body[: _EHDR + 3 * _PHDR] = header + programs
    body[strtab_at : strtab_at + len(strtab)] = strtab
    # symtab: one null symbol (already zeros); hash: nbucket 1, nchain 1, bucket[0] = chain[0] = 0
    body[hash_at : hash_at + 16] = struct.pack("<IIII", 1, 1, 0, 0)
    body[dynamic_at:] = dynamic
    return bytes(body)


def write_stub_library(
    path: str | os.PathLike[str], needed: Sequence[str] = (), soname: str | None = None
) -> str:
    """Write :func:`stub_library_bytes` to ``path`` (created or replaced); return the path."""
    data = stub_library_bytes(needed, soname)
    with open(path, "wb") as f:
        f.write(data)
    return os.fspath(path)


def _align(value: int, to: int) -> int:
    return (value + to - 1) // to * to
