"""The allocator settings (docs/performance.md, Memory allocator): in force after importing
``pipeline`` on glibc, off with SIDBP_MALLOC_TUNING=0, and they do what they are for: a
freed 64 MiB tensor stays in the heap for the next step instead of going back to the system."""
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import ctypes, torch
    import pipeline.allocator as a
    class Info(ctypes.Structure):  # glibc's struct mallinfo2
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    x = torch.ones(16 << 20)  # 64 MiB
    mapped = libc.mallinfo2().hblkhd  # bytes in mmap'd blocks
    del x
    print(a.keep_freed_memory(), mapped >= 64 << 20, libc.mallinfo2().fordblks >= 64 << 20)
""")


def probe(**env) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True,
                         text=True, check=True)
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"),
                    reason="glibc's mallopt")
def test_freed_tensors_stay_in_the_heap_only_with_the_settings():
    assert probe() == ["True", "False", "True"]  # served from the heap and kept there when freed
    assert probe(SIDBP_MALLOC_TUNING="0") == ["False", "True", "False"]  # glibc's default: mmap'd, unmapped
