"""Run claims: a lease per run folder, so processes sharing a log folder never train a run twice.

A claim is a lock file ``<run folder>.lock`` taken with ``flufl.lock``
(an NFS-safe lock: a hard link from a per-process claim file, atomic on local
and network file systems; its modification time is the lease's end). While
its owner lives, a heartbeat thread renews the lease every quarter of its
length. A claim can be taken by any process when

* its lease lapsed (its owner, on any host, stopped renewing it: killed,
  preempted, its machine gone), or
* its owner ran on this host and that process no longer exists (taken at
  once, without waiting for the lease).

The lease length is ``KDKERAS_LEASE_S`` seconds (default 300, five minutes;
``grid.py --lease_s``). Training (a teacher trained on the way) and grids
(every cell) both claim through this module; docs/reliability.md has the
details.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import os
import socket
import threading
import time

from kdkeras.errors import UsageError

LOCK_SUFFIX = ".lock"
#: Environment variable holding the lease length in seconds.
LEASE_ENV = "KDKERAS_LEASE_S"
DEFAULT_LEASE_S = 300.0
#: A lease lapses this long after its end (``flufl.lock``'s allowance for clock skew between hosts).
CLOCK_SLOP_S = 10.0

#: The claims this process holds: run folder -> (lock, stop event of its heartbeat).
_HELD: dict[str, tuple] = {}
_HELD_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def this_host() -> str:
    """This machine's name as claims record it (``flufl.lock`` uses the fully qualified name)."""
    return socket.getfqdn()


def lock_path(run_dir: str) -> str:
    """``<run_dir>.lock``: the claim file of a run folder."""
    return run_dir.rstrip(os.sep) + LOCK_SUFFIX


def lease_seconds() -> float:
    """The lease length: ``$KDKERAS_LEASE_S`` or :data:`DEFAULT_LEASE_S`."""
    text = os.environ.get(LEASE_ENV)
    if not text:
        return DEFAULT_LEASE_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise UsageError(f"{LEASE_ENV} must be a positive number of seconds. Received: {text!r}.")
    return value


def set_lease_seconds(seconds: float) -> None:
    """Sets the lease length of the claims this process (and its children) takes."""
    if seconds <= 0:
        raise UsageError(f"--lease_s must be a positive number of seconds. Received: {seconds}.")
    os.environ[LEASE_ENV] = repr(float(seconds))


class _QuietTimeouts(logging.Filter):
    """Drops ``flufl.lock``'s own "timed out" error: a claim another process won is an answer, not an error.

    :func:`try_claim` reports that outcome itself (the grid says which
    process holds the run); ``flufl.lock``'s other records pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "timed out"


_QUIET_TIMEOUTS = _QuietTimeouts()


def _lock(run_dir: str):
    from flufl.lock import Lock

    if _QUIET_TIMEOUTS not in logging.getLogger("flufl.lock").filters:
        logging.getLogger("flufl.lock").addFilter(_QUIET_TIMEOUTS)
    return Lock(lock_path(run_dir), lifetime=datetime.timedelta(seconds=lease_seconds()))


@dataclasses.dataclass(frozen=True)
class Owner:
    """Who holds a claim: ``host``, ``pid`` and the end of the lease (a Unix time)."""

    host: str
    pid: int
    lease_end: float
    #: A lock file of kdkeras before leases (JSON, never renewed): on this
    #: host it is held while its process lives; from another host, for one
    #: lease after it was written.
    legacy: bool = False

    @property
    def local(self) -> bool:
        return self.host in (this_host(), socket.gethostname())

    @property
    def lapsed(self) -> bool:
        """Whether the lease ended (plus the clock-skew allowance) without renewal."""
        if self.legacy and self.local:
            return False
        return time.time() > self.lease_end + CLOCK_SLOP_S

    @property
    def dead(self) -> bool:
        """Whether the owner ran on this host and its process is gone."""
        if not self.local:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    @property
    def live(self) -> bool:
        return not (self.lapsed or self.dead)

    def describe(self) -> str:
        """E.g. ``held by node12:4242, lease until 14:05:10`` or ``lease of node12:4242 lapsed at ...``."""
        end = datetime.datetime.fromtimestamp(self.lease_end).strftime("%H:%M:%S")
        who = f"{self.host}:{self.pid}"
        if self.dead:
            return f"owner {who} is gone"
        if self.lapsed:
            return f"lease of {who} lapsed at {end}"
        return f"held by {who}, lease until {end}"


def owner(run_dir: str) -> Owner | None:
    """The owner of the claim of ``run_dir`` (``None`` when it is unclaimed)."""
    from flufl.lock import NotLockedError

    lock = _lock(run_dir)
    try:
        host, pid, _ = lock.details
        lease_end = os.stat(lock_path(run_dir)).st_mtime
    except (NotLockedError, FileNotFoundError):
        return _legacy_owner(run_dir)
    return Owner(host, int(pid), lease_end)


def _legacy_owner(run_dir: str) -> Owner | None:
    """The owner named by a lock file that ``flufl.lock`` did not write (``None`` when there is none)."""
    path = lock_path(run_dir)
    try:
        with open(path) as f:
            text = f.read()
        written = os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        return Owner(str(data["host"]), int(data["pid"]), written + lease_seconds(), legacy=True)
    except (ValueError, KeyError, TypeError):
        return Owner("?", -1, written + lease_seconds(), legacy=True)  # being written: held for now


def describe(run_dir: str) -> str:
    """The state of the claim of ``run_dir`` in words (for progress lines and ``--dry_run``)."""
    who = owner(run_dir)
    return who.describe() if who else "unclaimed"


def is_claimed(run_dir: str) -> bool:
    """Whether a live process holds the claim of ``run_dir`` (its lease is current)."""
    who = owner(run_dir)
    return who is not None and who.live


def _break(run_dir: str, seen: Owner) -> None:
    """Removes a claim whose owner is gone or whose lease lapsed, if it is still the one seen."""
    path = lock_path(run_dir)
    try:
        with open(path) as f:
            claim_file = f.read().strip()
    except FileNotFoundError:
        return
    current = owner(run_dir)
    if current is None or (current.host, current.pid) != (seen.host, seen.pid) or current.live:
        return  # taken or renewed meanwhile
    for stale in (path, claim_file):
        if stale != path and not stale.startswith(path + "|"):
            continue  # a legacy lock file: no claim file beside it
        try:
            os.remove(stale)
        except FileNotFoundError:
            pass


def clear_stale(run_dir: str) -> bool:
    """Removes the claim of ``run_dir`` if its owner is gone or its lease lapsed.

    A process killed between writing a run's results and releasing its claim
    leaves a claim on a finished run; nothing would ever take it again.

    Returns:
        ``True`` when a stale claim was removed.
    """
    seen = owner(run_dir)
    if seen is None or seen.live:
        return False
    _break(run_dir, seen)
    return owner(run_dir) is None


def try_claim(run_dir: str) -> bool:
    """Takes the claim of ``run_dir`` if nobody live holds it, and starts renewing its lease.

    A claim whose lease lapsed, or whose owner on this host is gone, is
    taken over.

    Returns:
        ``True`` when this process now holds the claim.
    """
    from flufl.lock import AlreadyLockedError, TimeOutError

    seen = owner(run_dir)
    if seen is not None:
        if seen.live:
            return False
        _break(run_dir, seen)
    os.makedirs(os.path.dirname(lock_path(run_dir)) or ".", exist_ok=True)
    lock = _lock(run_dir)
    try:
        lock.lock(timeout=datetime.timedelta(seconds=1))
    except TimeOutError:
        return False
    except AlreadyLockedError:
        pass
    stop = threading.Event()
    with _HELD_LOCK:
        _HELD[run_dir] = (lock, stop)
    threading.Thread(target=_heartbeat, args=(run_dir, lock, stop), daemon=True,
                     name=f"kdkeras-lease:{os.path.basename(run_dir)}").start()
    return True


def _heartbeat(run_dir: str, lock, stop: threading.Event) -> None:
    """Renews the lease every quarter of its length until the claim is released."""
    from flufl.lock import NotLockedError

    interval = max(0.05, lock.lifetime.total_seconds() / 4)
    while not stop.wait(interval):
        try:
            lock.refresh()
        except NotLockedError:
            print(f"Warning: the claim of {run_dir} was taken over by another process "
                  f"({describe(run_dir)}): its lease lapsed while this one ran.", flush=True)
            return
        except OSError:
            continue  # a file-system hiccup: try again at the next beat


def release(run_dir: str) -> None:
    """Gives up the claim of ``run_dir`` (no error when this process does not hold it)."""
    from flufl.lock import NotLockedError

    with _HELD_LOCK:
        held = _HELD.pop(run_dir, None)
    if held is None:
        return
    lock, stop = held
    stop.set()
    try:
        lock.unlock(unconditionally=True)
    except NotLockedError:
        pass
