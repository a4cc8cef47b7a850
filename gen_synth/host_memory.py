"""Keep the host memory XLA:CPU frees, so that each step does not fault it in again.

XLA:CPU allocates every execution's buffers afresh (`posix_memalign` from
its worker threads): one temporary block per training phase (1.8-2.1 GiB at
res 128, batch 4) and the outputs. glibc serves blocks that large from each
thread's own arena by `mmap` and gives them back by `munmap` when freed, so
every step page-faults and zeroes all of it again. Measured on the 2-core AMD
EPYC (res 128, batch 4, `perf record` of Gmain): 2.1 GiB of minor faults per
Gmain and 1.7 GiB per Dmain, 12.5 % of Gmain's time in the kernel
(`clear_page_erms` under the convolutions' output memsets).

`keep_freed_memory()` sets three glibc malloc options (`mallopt`):

  M_ARENA_MAX = 1       every thread allocates from the main heap;
  M_MMAP_MAX = 0        large blocks come from that heap, not from mmap;
  M_TRIM_THRESHOLD = -1 free never hands the heap's top back to the OS.

A freed block is then reused by the next execution: no page faults after the
first step (measured: 0 minor faults per phase from the second step on; Gmain
10.0-11.5 -> 7.6-8.2 s, Dmain 12.2-12.4 -> 10.8-11.4 s, peak RSS 4.3 -> 4.4
GiB). The price: the process never returns memory to the OS before it exits
(a training or generation process reaches its peak every step anyway), and
all threads share one malloc lock; XLA's compiles, which run on three
threads that allocate much, ran slower (the res-128 training phases compiled
in 75-86 s instead of 57-63 s in two benchmark runs, 17-24 s more start-up).
M_ARENA_MAX=1 is the option that costs it and the one that cannot go: with
per-thread arenas glibc serves blocks over 64 MiB from mmap whatever
M_MMAP_MAX says, and the page faults come back (README, "Freed memory kept
for reuse").

The options only steer threads that have not allocated yet, so they must be
set before JAX starts its CPU client (before the first computation or device
query). `configure('auto')`, called by every gen_synth command before its
main function (`gen_synth.cli.run`, flag --host_memory) and by the
benchmarks, sets them only where they help: glibc, JAX not yet started, and
the CPU backend (JAX_PLATFORMS / jax_platforms names cpu first, or names
nothing and no GPU/TPU plugin is installed). GPU and TPU hosts keep glibc's
defaults: their step buffers live on the device, and their input pipelines'
many threads would contend for one heap.

Transparent huge pages for that heap: glibc (2.35 and later) asks the kernel
for 2 MiB pages for its heap when started with
GLIBC_TUNABLES=glibc.malloc.hugetlb=1, a setting read only at process start.
Where the kernel gives huge pages on request (`madvise` in
/sys/kernel/mm/transparent_hugepage/enabled) and freed memory is kept, every
gen_synth command therefore runs itself again first thing, with that tunable
added (`reexec_with_huge_pages`: the same process, PID and command line,
through execve; 0.1 s for `gen_synth.main`, 0.7-0.8 s for the commands whose
modules import JAX at the top). Res-256 CREPS training, batch 4, on the
2-core AMD EPYC, with and without in one run, twice: iteration 32.79 / 33.03 s
against 34.43 / 36.31 s, G's phases gaining most (README, "That heap in
transparent huge pages"). A phase's first run stays slow: on that VM touching
memory for the first time costs the same kernel time in 2 MiB pages as in
4 KiB ones. Kernels that use huge pages `always` need nothing; `never` gets
nothing. A GLIBC_TUNABLES that already names glibc.malloc.hugetlb is the
user's choice and is kept (=0 turns it off).
"""

import ctypes
import ctypes.util
import functools
import importlib.metadata
import importlib.util
import os
import platform
import re
import sys
from typing import Mapping, Optional, Sequence, Tuple

from absl import logging

MODES = ("auto", "keep", "system")

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
# Set in the environment of a process gen_synth ran again: it never does so twice.
REEXEC_MARK = "GEN_SYNTH_HUGE_PAGES_REEXEC"
_THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"

# Packages whose presence makes JAX pick an accelerator when nothing is named.
_ACCELERATOR_MODULES = ("libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin",
                        "jax_rocm60_plugin", "jax_rocm7_plugin")


def is_glibc() -> bool:
  return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def jax_started() -> bool:
  """Whether JAX has created a backend in this process (then it is too late)."""
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return bool(getattr(xla_bridge, "_backends", None))


def named_platforms() -> str:
  """The platforms JAX is told to use (jax_platforms or JAX_PLATFORMS), or ''."""
  try:
    import jax  # pylint: disable=g-import-not-at-top
    named = jax.config.jax_platforms
  except (ImportError, AttributeError):
    named = None
  return (named or os.environ.get("JAX_PLATFORMS", "")).strip()


def accelerator_installed() -> bool:
  """Whether a GPU/TPU plugin JAX would pick by default is installed."""
  if any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_MODULES):
    return True
  return bool(list(importlib.metadata.entry_points(group="jax_plugins")))


def cpu_backend_expected(platforms: Optional[str] = None,
                         accelerator: Optional[bool] = None) -> bool:
  """Whether JAX will run on the CPU: the first named platform, else no plugin installed."""
  platforms = named_platforms() if platforms is None else platforms
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  return not (accelerator_installed() if accelerator is None else accelerator)


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
  """Sets the three mallopt options (module doc); True when glibc took all three."""
  if not is_glibc():
    return False
  libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  return all(libc.mallopt(option, value) == 1 for option, value in
             ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))


def configure(mode: str = "auto") -> bool:
  """Applies `mode` before JAX starts: 'keep' always, 'auto' on CPU only, 'system' never.

  Returns whether freed memory is now kept. Says what it did at debug level
  (`-v 1`; commands keep their stderr for one-line errors).
  """
  if mode not in MODES:
    raise ValueError(f"host memory mode must be one of {MODES}, got {mode!r}")
  if mode == "system":
    return False
  if mode == "auto" and not cpu_backend_expected():
    return False
  if not is_glibc():
    logging.debug("host memory: glibc's defaults (not a glibc system)")
    return False
  if jax_started():
    logging.debug("host memory: glibc's defaults (JAX started before it could be set)")
    return False
  kept = keep_freed_memory()
  logging.debug("host memory: %s", "freed blocks kept for reuse (gen_synth.host_memory)"
               if kept else "mallopt refused; glibc's defaults")
  return kept


def transparent_huge_pages_mode(path: str = _THP_ENABLED) -> str:
  """The kernel's transparent huge page mode ('always', 'madvise', 'never'), or ''."""
  try:
    with open(path) as f:
      match = re.search(r"\[(\w+)\]", f.read())
  except OSError:
    return ""
  return match.group(1) if match else ""


def glibc_version() -> Tuple[int, ...]:
  """glibc's (major, minor), or () on another C library."""
  if not is_glibc():
    return ()
  try:
    return tuple(int(part) for part in platform.libc_ver()[1].split(".")[:2])
  except ValueError:
    return ()


def huge_pages_environ(environ: Mapping[str, str], thp_mode: Optional[str] = None,
                       glibc: Optional[Tuple[int, ...]] = None) -> Optional[dict]:
  """The environment to run this process again with, for a heap in huge pages; or None.

  None where it would change nothing or is not wanted: the kernel's mode is not
  'madvise' ('always' backs the heap by huge pages already, 'never' refuses
  them), glibc is older than 2.35 (no hugetlb tunable), GLIBC_TUNABLES already
  names glibc.malloc.hugetlb (the user's choice), or this process is the one
  run again (REEXEC_MARK).
  """
  thp_mode = transparent_huge_pages_mode() if thp_mode is None else thp_mode
  glibc = glibc_version() if glibc is None else glibc
  tunables = environ.get("GLIBC_TUNABLES", "")
  if (thp_mode != "madvise" or glibc < (2, 35) or REEXEC_MARK in environ
      or "glibc.malloc.hugetlb" in tunables):
    return None
  env = dict(environ)
  env["GLIBC_TUNABLES"] = ":".join(t for t in (tunables, HUGE_PAGES_TUNABLE) if t)
  env[REEXEC_MARK] = "1"
  return env


def mode_in_argv(argv: Sequence[str], default: str = "auto") -> str:
  """The value of a --host_memory flag in `argv` (before absl parses it), else `default`."""
  mode = default
  for i, arg in enumerate(argv):
    if arg.startswith("--host_memory="):
      mode = arg.split("=", 1)[1]
    elif arg == "--host_memory" and i + 1 < len(argv):
      mode = argv[i + 1]
  return mode


def reexec_with_huge_pages(mode: str) -> None:
  """Runs this process again at once, with `huge_pages_environ`, where that gives one.

  Only where `configure(mode)` will keep freed memory (decided here without
  importing JAX: JAX_PLATFORMS and the installed plugins). execve: the same
  PID and command line (`sys.orig_argv`), nothing of this process's state
  kept; returns only where nothing is done. gen_synth's commands call it
  first thing (`gen_synth.cli.run`), before their flags are parsed, so that a
  command runs again after little more than Python's start. Not for an
  interactive interpreter or a script read from stdin (neither can run
  again), which it leaves alone.
  """
  if mode == "system":
    return
  if mode == "auto" and not cpu_backend_expected(os.environ.get("JAX_PLATFORMS", "").strip()):
    return
  env = huge_pages_environ(os.environ)
  argv = list(getattr(sys, "orig_argv", []))
  if env is None or len(argv) < 2 or argv[1] == "-" or not sys.executable:
    return
  logging.debug("host memory: running again with GLIBC_TUNABLES=%s", env["GLIBC_TUNABLES"])
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable] + argv[1:], env)
