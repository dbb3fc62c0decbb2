"""Group instances into Dask tasks.

One task per instance would cost the scheduler about a millisecond each and
flood it with millions of keys; one task per study would put a whole study
in one worker's hands and make a retry expensive. A batch is capped both by
count and by bytes, so small MR slices travel a few dozen at a time and large
multi-frame files one or two at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .sources import Item

#: Defaults: enough work per task (tens of ms at least) to hide Dask's per-task
#: cost, small enough that a lost worker costs little to redo.
DEFAULT_BATCH_ITEMS = 32
DEFAULT_BATCH_BYTES = 64 * 2**20


def batches(
    items: Iterable[Item],
    max_items: int = DEFAULT_BATCH_ITEMS,
    max_bytes: int = DEFAULT_BATCH_BYTES,
) -> Iterator[list[Item]]:
    """Consecutive items in batches of at most ``max_items`` and about ``max_bytes``.

    Parameters
    ----------
    items : iterable of Item
        Consumed lazily.
    max_items : int
        At least 1.
    max_bytes : int
        A batch closes before an item would take it past this size; an item
        larger than ``max_bytes`` travels alone.

    Yields
    ------
    list of Item
        Never empty; order kept.
    """
    if max_items < 1 or max_bytes < 1:
        raise ValueError(f"batch limits must be positive, got {max_items} items, {max_bytes} bytes")
    batch: list[Item] = []
    size = 0
    for item in items:
        if batch and (len(batch) >= max_items or size + item.size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item.size
    if batch:
        yield batch
