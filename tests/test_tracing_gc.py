"""gen_synth/tracing_gc.py: the collector's thresholds, in commands and benchmark workers."""

import gc
import json
import pathlib
import subprocess
import sys
import weakref

from gen_synth import tracing_gc

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_configure_sets_the_thresholds_and_cycles_are_still_freed():
  previous = tracing_gc.configure()
  try:
    assert gc.get_threshold() == tracing_gc.THRESHOLDS

    class Node:
      pass

    a, b = Node(), Node()
    a.other, b.other = b, a                   # a cycle: reference counting cannot free it
    alive = weakref.ref(a)
    del a, b
    # No explicit collect: enough allocations start a generation-0 collection.
    kept = [[] for _ in range(2 * tracing_gc.THRESHOLDS[0])]
    assert alive() is None
    del kept
  finally:
    tracing_gc.configure(previous)
  assert gc.get_threshold() == previous


def _child_thresholds(code):
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       check=True, timeout=300)
  return tuple(json.loads(out.stdout.strip().splitlines()[-1]))


def test_commands_and_benchmark_workers_run_with_the_thresholds():
  command = ("import gc, json; from gen_synth import cli; "
             "cli.run(lambda argv: print(json.dumps(gc.get_threshold())))")
  assert _child_thresholds(command) == tracing_gc.THRESHOLDS
  worker = ("import gc, json, sys; sys.path.insert(0, 'experiments/benchmarks'); import harness; "
            "from absl import app; "
            "app.run(lambda argv: [harness.start_worker(), "
            "print(json.dumps(gc.get_threshold()))] and None)")
  assert _child_thresholds(worker) == tracing_gc.THRESHOLDS
  # A plain Python process keeps CPython's defaults: nothing is set on import.
  assert _child_thresholds("import gc, json, gen_synth.tracing_gc; "
                           "print(json.dumps(gc.get_threshold()))") != tracing_gc.THRESHOLDS
