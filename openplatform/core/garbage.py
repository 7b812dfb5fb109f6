"""Python's cyclic garbage collector in the long-running processes (docs/architecture.md §7, "Pauses").

A web or worker process holds some 140,000 objects once Django, DRF, Celery and the views are imported,
and they live as long as the process. A full collection walks every one of them: 60-100 ms during
which no thread of the process runs (the collector holds the GIL). Under load a process ran one every
few hundred uploads, and each such pause made every request in flight wait.

`freeze_startup()`, once startup is done, moves what exists then into the collector's permanent
generation (`gc.freeze()`): full collections walk only what was made since. Nothing is disabled:
cycles made later are collected as before.
"""

from __future__ import annotations

import gc


def freeze_startup() -> None:
    """Collect what startup left behind, then keep the survivors out of every later collection."""
    gc.collect()
    gc.freeze()
