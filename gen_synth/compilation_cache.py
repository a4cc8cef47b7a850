"""JAX's persistent compilation cache for training runs.

A restarted run (preemption, `kill -9`, a resumed job) compiles the same
training phases again: at res 256 on a 2-core CPU that is ~50 s of its
start-up, on accelerators often minutes. With the cache on, each executable
that took at least `jax_persistent_cache_min_compile_time_secs` (jax's
default: 1 s) to compile is written once and loaded by later processes whose
program, options and devices are the same. `python -m gen_synth.main` keeps it
in WORKDIR/compilation_cache/process_<i> by default (`--compilation_cache`),
one folder per process so that hosts never write the same files, unless JAX
already has a cache folder (JAX_COMPILATION_CACHE_DIR): a user's setting
wins. An entry that cannot be read (e.g. cut short by a kill) is compiled
again: jax logs the error and goes on.
"""

import os
from typing import Optional

AUTO = "auto"
NONE = "none"


def directory(setting: str, workdir: str, process_index: int,
              configured: Optional[str] = None) -> Optional[str]:
  """The cache folder for `--compilation_cache=setting`.

  'auto': `configured` (the folder JAX already has, if any), else
  WORKDIR/compilation_cache/process_<i>; 'none': no cache; anything else: a
  folder of the user's, one subfolder per process.
  """
  if setting == NONE or not setting:
    return None
  if setting == AUTO and configured:
    return configured
  root = os.path.join(workdir, "compilation_cache") if setting == AUTO else setting
  return os.path.join(root, f"process_{process_index}")


def enable(setting: str, workdir: str) -> Optional[str]:
  """Points JAX's persistent compilation cache where `directory` says -> the folder.

  A process-wide JAX setting: call it once, after jax.distributed.initialize
  and before the first compilation. 'none' also turns off a folder JAX had.
  """
  import jax  # pylint: disable=g-import-not-at-top
  path = directory(setting, workdir, jax.process_index(),
                   configured=jax.config.jax_compilation_cache_dir)
  jax.config.update("jax_compilation_cache_dir", path)
  return path
