"""Instruction counts from valgrind's callgrind, switched on only around what is measured.

Python code cannot issue valgrind's client requests (they are a magic sequence
of machine instructions, normally inlined from valgrind.h), so `_client_request`
is that sequence, x86-64 only, in a page of executable memory called through
ctypes. Outside valgrind it does nothing and returns 0. The process runs under
`valgrind --tool=callgrind --instr-atstart=no`, nearly at full speed until it asks
for instrumentation; then each `dump(label)` writes the instructions counted
since the previous one to a file per thread, which `totals` reads.
Counts are of the client process only: the devstack runs elsewhere, unmeasured.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import re
import shutil
from collections.abc import Callable
from pathlib import Path

# valgrind.h's client request for amd64: %rdx = request(%rax -> [code, arg1..arg5]). The four
# rotations of %rdi add up to 128 bits (no change); valgrind recognises them with `xchg %rbx,%rbx`.
_AMD64_REQUEST = bytes.fromhex(
    "4889f8"  # mov %rdi,%rax (the argument block)
    "31d2"  # xor %edx,%edx (the result outside valgrind: 0)
    "48c1c703" "48c1c70d" "48c1c73d" "48c1c733"  # rol $3, $13, $61, $51, %rdi
    "4887db"  # xchg %rbx,%rbx
    "4889d0"  # mov %rdx,%rax
    "c3")  # ret
_RUNNING_ON_VALGRIND = 0x1001
_CALLGRIND = 0x43540000  # VG_USERREQ_TOOL_BASE('C', 'T'), callgrind.h
_DUMP_STATS_AT = _CALLGRIND + 3
_ZERO_STATS = _CALLGRIND + 1
_START_INSTRUMENTATION = _CALLGRIND + 4

# --separate-threads: the call path is the event loop's thread alone, whatever the exporter's
# background threads (batch export, metrics, Live Metrics) happen to do while it runs.
COMMAND = ("valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes", "--quiet")


def available() -> str | None:
    """None when callgrind can run the benchmark here, else why not."""
    if shutil.which("valgrind") is None:
        return "valgrind is not installed"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"callgrind markers are implemented for x86-64 only (this is {platform.machine()})"
    return None


def command(out_dir: Path) -> list[str]:
    return [*COMMAND, f"--callgrind-out-file={out_dir}/callgrind.out.%p"]


class Markers:
    """Callgrind's client requests: start instrumentation, zero the counters, dump them with a label."""

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self._page.write(_AMD64_REQUEST)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._page))
        self._request: Callable[..., int] = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p)(address)

    def _send(self, code: int, argument: int = 0) -> int:
        block = (ctypes.c_size_t * 6)(code, argument, 0, 0, 0, 0)
        return self._request(ctypes.addressof(block))

    @property
    def running_on_valgrind(self) -> bool:
        return self._send(_RUNNING_ON_VALGRIND) > 0

    def start(self) -> None:
        self._send(_START_INSTRUMENTATION)
        self._send(_ZERO_STATS)

    def zero(self) -> None:
        self._send(_ZERO_STATS)

    def dump(self, label: str) -> None:
        """Write the counts since the last zero or dump, under `label`, and start counting afresh."""
        text = ctypes.create_string_buffer(label.encode("ascii"))
        self._send(_DUMP_STATS_AT, ctypes.addressof(text))


_TOTALS = re.compile(rb"^totals:\s+(\d+)", re.MULTILINE)
_TRIGGER = re.compile(rb"^desc: Trigger: Client Request: (.+)$", re.MULTILINE)


_THREAD = re.compile(rb"^thread: (\d+)$", re.MULTILINE)


def totals(out_dir: Path) -> dict[str, dict[str, int]]:
    """Per dump label, the instructions of the main thread and of all threads (the dump at exit left out)."""
    found: dict[str, dict[str, int]] = {}
    for path in out_dir.glob("callgrind.out.*"):
        data = path.read_bytes()
        trigger, total, thread = _TRIGGER.search(data), _TOTALS.search(data), _THREAD.search(data)
        if trigger and total:
            counts = found.setdefault(trigger.group(1).decode(), {"main": 0, "all": 0})
            counts["all"] += int(total.group(1))
            if thread and int(thread.group(1)) == 1:
                counts["main"] += int(total.group(1))
    return found
