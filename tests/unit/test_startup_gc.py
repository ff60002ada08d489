"""After start-up the hub takes its long-lived objects out of the collector's full passes."""

from __future__ import annotations

import gc
import weakref

from hub.app import freeze_startup_objects


def test_startup_objects_are_frozen_and_stay_out_of_full_collections() -> None:
    survivors = [[n] for n in range(50_000)]  # long-lived objects, as start-up leaves them
    try:
        freeze_startup_objects()
        frozen = gc.get_freeze_count()
        assert frozen >= len(survivors)
        gc.collect()  # a full collection leaves the frozen objects where they are
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_unreachable_startup_garbage_is_collected_not_frozen() -> None:
    class Node:
        other: Node

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle only the collector frees
    alive = weakref.ref(a)
    del a, b
    try:
        freeze_startup_objects()
        assert alive() is None
    finally:
        gc.unfreeze()
