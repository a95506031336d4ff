"""The engine unmaps the clean file pages that only its imports and model load ran (Linux).

Importing numpy/onnxruntime and building the sessions map ~17 MiB of shared-library code that an
analysis never runs again; the engine hands those pages back after loading (they stay in the page
cache and map back on use). Only mappings that hold nothing but the file's own bytes are dropped:
a copy-on-write page (written, then made read-only) keeps the process's data. Each check runs in a
fresh process: what is resident depends on everything the process ran before.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps and madvise")

SMAPS_HELPERS = r"""
import ctypes, mmap, os, re, sys
def rss_of(start):
    '''Resident KiB of the mapping that starts at `start`.'''
    found = False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            m = re.match(r"^([0-9a-f]+)-", line)
            if m:
                found = int(m[1], 16) == start
            elif found and line.startswith("Rss:"):
                return int(line.split()[1])
    raise AssertionError("mapping not found")
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
def map_file(path, size, prot):
    fd = os.open(path, os.O_RDWR)
    os.fsync(fd)  # written back: clean page-cache pages, as a library's are (dirty ones are never dropped)
    addr = libc.mmap(None, size, prot, mmap.MAP_PRIVATE, fd, 0)
    os.close(fd)
    assert addr not in (None, ctypes.c_void_p(-1).value)
    return addr
"""


def _run(code: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", SMAPS_HELPERS + textwrap.dedent(code), *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_clean_read_only_pages_are_dropped_and_read_back_unchanged(tmp_path):
    data = bytes(range(256)) * (4096 * 64 // 256)  # 64 pages
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    out = _run(
        """
        from ember.engine.residency import drop_clean_file_pages
        size = os.path.getsize(sys.argv[1])
        addr = map_file(sys.argv[1], size, mmap.PROT_READ)
        before = ctypes.string_at(addr, size)  # every page resident
        assert rss_of(addr) >= size // 1024, rss_of(addr)
        dropped = drop_clean_file_pages()
        print(rss_of(addr), dropped >= size, ctypes.string_at(addr, size) == before == open(sys.argv[1], "rb").read())
        """,
        str(path),
    )
    assert out.split() == ["0", "True", "True"]


def test_copy_on_write_pages_of_a_read_only_mapping_are_kept(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\0" * 4096 * 4)
    out = _run(
        """
        from ember.engine.residency import drop_clean_file_pages
        addr = map_file(sys.argv[1], 4096 * 4, mmap.PROT_READ | mmap.PROT_WRITE)
        ctypes.memmove(addr, b"relocated", 9)  # a private copy, as the dynamic linker writes RELRO
        assert libc.mprotect(addr, 4096 * 4, mmap.PROT_READ) == 0
        drop_clean_file_pages()
        print(ctypes.string_at(addr, 9).decode())
        """,
        str(path),
    )
    assert out.strip() == "relocated"


def test_loaded_engine_keeps_no_load_only_library_code_resident(tiny_bundle):
    """onnxruntime's extension maps ~18 MiB of code while the sessions are built; after the load
    only what ran since stays resident (before: all of it)."""
    out = _run(
        """
        import numpy as np
        from ember.engine import EmberEngine
        engine = EmberEngine(sys.argv[1])
        clean = 0
        path, cur = "", {}
        with open("/proc/self/smaps") as fh:
            for line in fh:
                parts = line.split()
                if re.match(r"^[0-9a-f]+-[0-9a-f]+$", parts[0]):
                    path = parts[5] if len(parts) > 5 else ""
                    perms = parts[1]
                elif parts[0] == "Rss:" and "onnxruntime_pybind11_state" in path and "w" not in perms:
                    clean += int(parts[1])
        print(clean)
        a = engine.analyze(np.zeros((64, 64, 3), np.uint8), "find people", max_new_tokens=4, stop_at_eos=False)
        print(a.num_generated_tokens)
        """,
        str(tiny_bundle),
    )
    clean_kib, tokens = (int(v) for v in out.split())
    assert clean_kib < 4 * 1024, f"{clean_kib} KiB of onnxruntime's read-only pages still resident after load"
    assert tokens == 4  # the dropped code maps back in when it runs


def test_clean_file_mappings_parses_smaps():
    from ember.engine.residency import clean_file_mappings

    smaps = textwrap.dedent(
        """\
        00400000-00402000 r-xp 00000000 08:01 10 /usr/lib/libx.so
        Rss:                   8 kB
        Anonymous:             0 kB
        Private_Dirty:         0 kB
        Shared_Dirty:          0 kB
        00402000-00403000 r--p 00002000 08:01 10 /usr/lib/libx.so
        Rss:                   4 kB
        Anonymous:             4 kB
        Private_Dirty:         4 kB
        Shared_Dirty:          0 kB
        00403000-00404000 rw-p 00003000 08:01 10 /usr/lib/libx.so
        Rss:                   4 kB
        Anonymous:             0 kB
        Private_Dirty:         0 kB
        Shared_Dirty:          0 kB
        00500000-00600000 rw-p 00000000 00:00 0 [heap]
        Rss:                  64 kB
        Anonymous:            64 kB
        Private_Dirty:        64 kB
        Shared_Dirty:          0 kB
        00700000-00701000 r--p 00000000 00:01 5 /memfd:jit (deleted)
        Rss:                   4 kB
        Anonymous:             0 kB
        Private_Dirty:         0 kB
        Shared_Dirty:          0 kB
        """
    )
    assert clean_file_mappings(smaps) == [(0x400000, 0x402000, 8192)]
