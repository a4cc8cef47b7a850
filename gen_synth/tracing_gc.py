"""CPython's garbage-collection thresholds for a process that traces JAX programs.

Tracing and lowering a training phase allocates millions of short-lived
Python objects (tracers, jaxpr equations, MLIR operations). With CPython's
default thresholds, (700, 10, 10), the cyclic collector runs after every 700
net allocations and walks older generations often: lowering CREPS-256's four
G and D phases (batch 4, abstract inputs, one process each, this project's
2-core CPU) took 10.1-11.2 s with them, 7.9-8.1 s with `THRESHOLDS` and
7.6-8.6 s with the collector off. The start-up of every
command traces, so `gen_synth.cli.run` calls `configure()` first thing, and so
do the benchmark workers; a notebook or program of yours may call it once.

Only how often the collector runs changes: every unreachable cycle is still
freed, at a later collection, and reference counting frees everything else at
once, as before (the device buffers of JAX arrays included).
"""

import gc
from typing import Tuple

# Generation 0 after 50,000 net allocations (CPython: 700); generation 1 after
# 20 of those, generation 2 after 100 of those (CPython: 10 and 10).
THRESHOLDS = (50_000, 20, 100)


def configure(thresholds: Tuple[int, int, int] = THRESHOLDS) -> Tuple[int, int, int]:
  """Sets the collector's thresholds for this process; returns the previous ones."""
  previous = gc.get_threshold()
  gc.set_threshold(*thresholds)
  return previous
