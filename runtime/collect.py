"""Fewer cyclic garbage collections while a compile or a simulation runs.

Python's cyclic collector runs every 700 net allocations by default. A compile allocates
millions of small IR objects that all stay alive, and a simulation many small objects
(effects, ranges, prepared instructions) that are no cyclic garbage; the collections find
next to nothing and walk ever more objects (about 14 % of a vgg16-cifar10 compile, a tenth
of a first simulation of sew-resnet18-dvs). `fewer_collections()` raises the threshold for
the duration; garbage is still collected. `full_every` (gc's third threshold: a full
collection after that many of the middle generation) spaces out the full collections, each
of which walks every object alive: the compile passes 100, since a program of 10^5
instructions is ~10^6 objects that all stay alive (spikformer-hff's compile spent ~1 s, 15 %,
in them; 0.6 s with 100, at the same peak memory). Standard library only:
compiler/pipeline.py uses it too.
"""

from __future__ import annotations

import contextlib
import gc


IR_FULL_EVERY = 100  # `full_every` for compile-side work (compiles, explore's search): see above


@contextlib.contextmanager
def fewer_collections(gen0: int = 50_000, full_every: int = 0):
    old = gc.get_threshold()
    gc.set_threshold(max(gen0, old[0]), old[1], max(full_every, old[2]))
    try:
        yield
    finally:
        gc.set_threshold(*old)
