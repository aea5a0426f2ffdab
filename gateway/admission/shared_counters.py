"""The counter store of one machine: a table in shared memory every worker maps.

Each worker process maps the same file (in a folder the `gateway` supervisor
makes before it starts the workers, GATEWAY_COUNTERS_DIR; a temporary one for an
app made in a test) and changes it under an exclusive `flock`, so a limit of 60
requests a minute is 60 for all workers together, exactly: each decision reads
and spends in one step under the lock (a few microseconds; no database, no
other process in the path).

The table has SLOTS fixed-size slots, found by open addressing on a 64-bit
fingerprint of the subject. When the probed slots are all taken, the least
recently used one with nothing in flight is reused (its client comes back with
full buckets, which it would mostly have had). Keys and addresses live in two
tables, so a client spraying addresses cannot push keys' counts out.

Requests in flight are counted per worker, in the worker's own column: a worker
claims a column by holding `worker-N.lock` (the kernel lets go of it when the
process dies, however it dies), and clears the column when it claims it, so the
counts of a worker that crashed do not stay behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import mmap
import os
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from gateway.admission.counters import (
    DAY_SECONDS,
    ImmediateStore,
    Slot,
    Standing,
    Verdict,
    admit,
    brought_to,
    settle_many,
    standing_of,
)
from gateway.admission.limits import Limits

SLOTS = 16_384
PROBES = 32
COLUMNS = 64  # WORKERS is at most 64
# fingerprint, touched, requests, at, tokens, at, day, used, in flight (all workers')
_HEAD = struct.Struct("<Qdddddqqq")
_MARK = struct.Struct("<Qd")
_FINGERPRINT = struct.Struct("<Q")
_COUNTS = struct.Struct("<ddddqqq")  # the Slot: the head after its fingerprint and touched
_TAIL = struct.Struct("<dddddqqq")  # the head after its fingerprint
_COLUMNS = struct.Struct(f"<{COLUMNS}i")
_COLUMN = struct.Struct("<i")
_TOTAL = struct.Struct("<q")
_TOTAL_AT = _HEAD.size - 8
SLOT_BYTES = _HEAD.size + _COLUMNS.size
TABLE_BYTES = SLOTS * SLOT_BYTES
COUNTERS_DIR_VARIABLE = "GATEWAY_COUNTERS_DIR"


class ColumnsTaken(RuntimeError):
    """More worker processes than columns (cannot happen with WORKERS <= 64)."""


@functools.lru_cache(maxsize=65_536)
def fingerprint(subject: str) -> int:
    """A subject's 64-bit name in the table (0 means an empty slot)."""
    value = int.from_bytes(hashlib.blake2b(subject.encode(), digest_size=8).digest(), "little")
    return value or 1


class Table:
    """One mapped file of slots. Not locked itself: SharedCounters holds the lock."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < TABLE_BYTES:
                os.ftruncate(fd, TABLE_BYTES)  # sparse: pages appear as slots are used
            self.memory = mmap.mmap(fd, TABLE_BYTES)
        finally:
            os.close(fd)

    def find(self, mark: int, now: float) -> int:
        """The offset of `mark`'s slot, made if need be."""
        memory = self.memory
        start = mark % SLOTS
        spare: tuple[float, int] | None = None
        for step in range(PROBES):
            offset = ((start + step) % SLOTS) * SLOT_BYTES
            found, touched = _MARK.unpack_from(memory, offset)
            if found == mark:
                return offset
            if found == 0:
                self._clear(offset, mark)
                return offset
            busy = _TOTAL.unpack_from(memory, offset + _TOTAL_AT)[0] > 0
            candidate = (touched + (1e18 if busy else 0.0), offset)
            if spare is None or candidate < spare:
                spare = candidate
        assert spare is not None
        self._clear(spare[1], mark)
        return spare[1]

    def _clear(self, offset: int, mark: int) -> None:
        self.memory[offset : offset + SLOT_BYTES] = bytes(SLOT_BYTES)
        inf = float("inf")
        _HEAD.pack_into(self.memory, offset, mark, 0.0, inf, 0.0, inf, 0.0, 0, 0, 0)

    def holds(self, offset: int, mark: int) -> bool:
        """Whether the slot at `offset` is still `mark`'s (it may have been reused)."""
        return bool(_FINGERPRINT.unpack_from(self.memory, offset)[0] == mark)

    def read(self, offset: int) -> Slot:
        return Slot._make(_COUNTS.unpack_from(self.memory, offset + 16))

    def write(self, offset: int, slot: Slot, before: Slot, column: int, now: float) -> None:
        """The slot's counts; its change in flight also in this worker's column."""
        change = slot.in_flight - before.in_flight
        total = slot.in_flight
        if change:
            where = offset + _HEAD.size + 4 * column
            mine = _COLUMN.unpack_from(self.memory, where)[0]
            if mine + change < 0:  # (never: a worker settles only what it admitted)
                total -= mine + change
                change = -mine
            _COLUMN.pack_into(self.memory, where, mine + change)
        _TAIL.pack_into(self.memory, offset + 8, now, *slot[:6], total)

    def clear_column(self, column: int) -> None:
        """A dead worker's requests in flight: out of the column, and of the totals."""
        for index in range(SLOTS):
            offset = index * SLOT_BYTES
            where = offset + _HEAD.size + 4 * column
            left = _COLUMN.unpack_from(self.memory, where)[0]
            if left and _MARK.unpack_from(self.memory, offset)[0]:
                _COLUMN.pack_into(self.memory, where, 0)
                total = _TOTAL.unpack_from(self.memory, offset + _TOTAL_AT)[0]
                _TOTAL.pack_into(self.memory, offset + _TOTAL_AT, max(0, total - left))

    def close(self) -> None:
        self.memory.close()


class SharedCounters(ImmediateStore):
    """CounterStore over this machine's shared memory (see the module's docstring)."""

    def __init__(self, folder: Path, clock: Callable[[], float] = time.time) -> None:
        self.folder = folder
        self.owns_folder = False  # made for this store alone: removed with it
        self.clock = clock
        self._lock_fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        self.tables = {"key": Table(folder / "keys.table"), "ip": Table(folder / "addresses.table")}
        self.column, self._column_fd = self._claim_column()
        # subject → (limits, tokens used beyond reservations, requests ended): settle_later
        self._pending: dict[str, tuple[Limits, int, int]] = {}
        self._flush_scheduled = False
        # subject → (table, offset, mark): where its slot was; checked before use (under
        # the lock), as another worker may have reused the slot since.
        self._where: dict[str, tuple[Table, int, int]] = {}
        with self._locked():
            for table in self.tables.values():
                table.clear_column(self.column)

    def _claim_column(self) -> tuple[int, int]:
        for column in range(COLUMNS):
            fd = os.open(self.folder / f"worker-{column}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            return column, fd
        raise ColumnsTaken(f"more than {COLUMNS} processes share {self.folder}")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _table(self, subject: str) -> Table:
        return self.tables["ip" if subject.startswith("ip:") else "key"]

    def _slot_of(self, subject: str, now: float) -> tuple[Table, int]:
        """(Under the lock.) The table and offset of `subject`'s slot, made if need be."""
        where = self._where.get(subject)
        if where is not None and where[0].holds(where[1], where[2]):
            return where[0], where[1]
        table, mark = self._table(subject), fingerprint(subject)
        offset = table.find(mark, now)
        if len(self._where) >= SLOTS:
            self._where.clear()
        self._where[subject] = (table, offset, mark)
        return table, offset

    def admit_now(self, subject: str, limits: Limits, tokens: int) -> Verdict:
        now = self.clock()
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # (not _locked: this is every request)
        try:
            if self._pending:  # ends noted this turn come first, under the same lock
                self._write_pending(now)
            table, offset = self._slot_of(subject, now)
            before = table.read(offset)
            after, verdict = admit(before, limits, tokens, now)
            table.write(offset, after, before, self.column, now)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        return verdict

    def settle_now(self, subject: str, limits: Limits, reserved: int, used: int | None) -> None:
        self.settle_later(subject, limits, reserved, used)
        self.flush()

    def settle_later(self, subject: str, limits: Limits, reserved: int, used: int | None) -> None:
        """Note a request's end; written with the others of this loop turn, at once (one
        lock for all). Until then its reservation and place in flight still count:
        the delay can only refuse, never let through, what the limit would not."""
        change = 0 if used is None else used - reserved
        pending = self._pending.get(subject)
        self._pending[subject] = (
            (limits, change, 1)
            if pending is None
            else (limits, pending[1] + change, pending[2] + 1)
        )
        if not self._flush_scheduled:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
                self._flush_scheduled = True
            except RuntimeError:  # no loop (a tool): now
                self.flush()

    def flush(self) -> None:
        """Write the noted ends: per subject, their changes added up."""
        self._flush_scheduled = False
        if not self._pending:
            return
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # (not _locked: most requests' ends)
        try:
            self._write_pending(self.clock())
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _write_pending(self, now: float) -> None:
        """(Under the lock.)"""
        pending, self._pending = self._pending, {}
        for subject, (limits, change, ended) in pending.items():
            table, offset = self._slot_of(subject, now)
            before = table.read(offset)
            table.write(
                offset, settle_many(before, limits, change, ended, now), before, self.column, now
            )

    def seed_day(self, subject: str, used: int) -> None:
        """Today's tokens a subject used before this run (gateway/main.py, at start, from
        the usage per key), so that a restart does not give a key its day again."""
        table, mark, now = self._table(subject), fingerprint(subject), self.clock()
        with self._locked():
            offset = table.find(mark, now)
            before = table.read(offset)
            after = before._replace(day=int(now // DAY_SECONDS), day_used=used)
            table.write(offset, after, before, self.column, now)

    def standing_now(self, subject: str, limits: Limits) -> Standing:
        self.flush()
        table, mark, now = self._table(subject), fingerprint(subject), self.clock()
        with self._locked():
            offset = table.find(mark, now)
            slot = table.read(offset)
        return standing_of(brought_to(slot, limits, now), limits, now)

    def close(self) -> None:
        self.flush()
        for table in self.tables.values():
            table.close()
        os.close(self._lock_fd)
        os.close(self._column_fd)


def counters_folder() -> tuple[Path, bool]:
    """The folder the supervisor made for this gateway's workers, or a new private one
    (an app made in-process: one worker). True when made here (the caller removes it)."""
    folder = os.environ.get(COUNTERS_DIR_VARIABLE)
    if folder:
        return Path(folder), False
    return Path(tempfile.mkdtemp(prefix="gateway-counters-", dir=shared_memory_base())), True


def shared_memory_base() -> str | None:
    """Where the table's file goes: memory (/dev/shm), where the system has it."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
