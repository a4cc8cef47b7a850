"""Shared pieces of the side-by-side benchmarks (train.py, generation.py).

Every case runs in a process of its own (its peak RSS is its own, nothing is
warm from another case) and prints one JSON line; the driver collects them.
A speed is reported beside the f32 GEMM peak of XLA measured in the same run
(`gemm_peak_gflops`, run first and last), so a ratio and its % of peak come
from one run on one machine.

`XLA_DEFAULT_KERNELS` is the environment that makes gen_synth compile with
jaxlib's default XLA:CPU kernels instead of its own choice (gen_synth/xla_cpu.py):
an XLA_FLAGS entry that names the option makes gen_synth leave it out, and
'+reduce' adds nothing to XLA's default list. gen_synth's other option, LLVM
optimisation level 1, stays in effect in that case.

A gen_synth worker (train.py, generation.py, compose.py, discriminator.py,
accelerator.py) calls `start_worker()` first, which sets the host memory mode of
--host_memory before JAX starts, as gen_synth's commands do
(gen_synth/host_memory.py; default auto: freed memory kept on CPU).
"""

import json
import os
import resource
import subprocess
import time
from typing import Dict, List, Optional

from gen_synth import cli
from gen_synth import host_memory
from gen_synth import tracing_gc

HOST_MEMORY = cli.HOST_MEMORY      # the commands' --host_memory flag, for the workers

XLA_DEFAULT_KERNELS = {"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") +
                                     " --xla_cpu_experimental_ynn_fusion_type=+reduce").strip()}


def start_worker() -> bool:
  """A worker's first call, before JAX starts: the host memory mode of --host_memory.

  As gen_synth's commands (`gen_synth.cli.run`), a worker that keeps freed
  memory runs itself again with the heap in huge pages where that applies,
  and relaxes Python's garbage collector for tracing (gen_synth/tracing_gc.py).
  """
  host_memory.reexec_with_huge_pages(HOST_MEMORY.value)
  tracing_gc.configure()
  return host_memory.configure(HOST_MEMORY.value)


def gemm_peak_gflops(n: int = 2048, reps: int = 7, dtype: str = "float32") -> float:
  """XLA's GEMM rate on an n x n matmul (GFLOP/s): the best of `reps` calls,
  with jaxlib's default kernels and with gen_synth's for that compute dtype
  (gen_synth/xla_cpu.py), whichever is faster. bfloat16 operands are
  multiplied with float32 accumulation, as gen_synth's layers multiply them
  (`layers.matmul_last`)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from gen_synth import xla_cpu  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
  matmul = lambda a: jnp.dot(a, a, preferred_element_type=jnp.float32)
  best = float("inf")
  for f in (jax.jit(matmul), xla_cpu.jit(matmul, compute_dtype=dtype)):
    jax.block_until_ready(f(a))
    for _ in range(reps):
      t = time.perf_counter()
      jax.block_until_ready(f(a))
      best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best / 1e9


def best_time(fn, *args, reps: int):
  """(best seconds of `reps` calls after a first one, fn's output): fn is jax code."""
  import jax  # pylint: disable=g-import-not-at-top
  out = jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t)
  return best, out


def compiled_generator(config, batch: int, dtype_name: str):
  """The randomly initialised generator of `config`, jitted at its training size
  (no noise) and compiled: (compiled, (variables, z), FLOPs by XLA's cost
  analysis of `cost.one_pass`, compile seconds)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from gen_synth import cost, sampling, xla_cpu  # pylint: disable=g-import-not-at-top
  res = config.model.resolution
  model = sampling.deterministic(sampling.build_model(config, dtype=dtype_name))
  variables = sampling.init_variables(model)
  z = jax.random.normal(jax.random.PRNGKey(1), (batch, model.z_dim), jnp.float32)
  t = time.perf_counter()
  compiled = xla_cpu.jit(lambda v, z: model.apply(v, z, height=res, width=res),
                         compute_dtype=model.dtype).lower(variables, z).compile()
  compile_s = time.perf_counter() - t
  counted = cost.one_pass(model)
  flops = cost.xla_flops(
      jax.jit(lambda v, z: counted.apply(v, z, height=res, width=res)).lower(variables, z))
  return compiled, (variables, z), flops, compile_s


def time_generator(config, batch: int, dtype_name: str, reps: int) -> dict:
  """`compiled_generator`, timed: {'res', 'batch', 'dtype', 's_per_img' (median
  of `reps` calls after a warm-up), 's_all', 'gflop_per_img' (XLA's cost
  analysis of `cost.one_pass`), 'compile_s', 'ready_at' (perf_counter after
  the warm-up)}."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  compiled, args, flops, compile_s = compiled_generator(config, batch, dtype_name)
  jax.block_until_ready(compiled(*args))
  ready_at = time.perf_counter()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t)
  return {"res": config.model.resolution, "batch": batch, "dtype": dtype_name,
          "s_per_img": float(np.median(times)) / batch, "s_all": times,
          "gflop_per_img": flops / batch / 1e9, "compile_s": compile_s, "ready_at": ready_at}


def training_setup(config, mesh):
  """What a training benchmark times, built as `train_and_evaluate` builds it:
  a namespace of generator, discriminator, g_tx, d_tx, shardings, state (fresh),
  steps (`compiled_steps.CompiledSteps`), images (random, [B, R, R, 3] sharded
  over the batch) and key, for `config.train.batch_size` images on `mesh`."""
  import types  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from gen_synth import compiled_steps, train_steps, xla_cpu  # pylint: disable=g-import-not-at-top
  from gen_synth import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  res, batch = config.model.resolution, config.train.batch_size
  generator, discriminator = compiled_steps.build_models(config)
  g_tx, d_tx = train_steps.make_optimizers(config.train)
  init = lambda k: train_steps.init_state(generator, discriminator, g_tx, d_tx, k,
                                          resolution=res, train_config=config.train)
  shardings = sharding_lib.state_shardings(mesh, jax.eval_shape(init, jax.random.PRNGKey(0)))
  return types.SimpleNamespace(
      generator=generator, discriminator=discriminator, g_tx=g_tx, d_tx=d_tx,
      shardings=shardings, state=xla_cpu.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0)),
      steps=compiled_steps.CompiledSteps(config, generator, discriminator, g_tx, d_tx, mesh,
                                         shardings),
      images=jax.device_put(
          jax.random.uniform(jax.random.PRNGKey(1), (batch, res, res, 3), minval=-1, maxval=1),
          sharding_lib.batch_sharding(mesh)),
      key=jax.random.PRNGKey(2))


def phase_flops(config, setup, mesh):
  """name -> FLOPs of that training phase of `setup` (`training_setup`): XLA's
  cost analysis of the phase with `cost.one_pass(generator)`, lowered only."""
  from gen_synth import compiled_steps, cost  # pylint: disable=g-import-not-at-top
  counted = compiled_steps.CompiledSteps(config, cost.one_pass(setup.generator),
                                         setup.discriminator, setup.g_tx, setup.d_tx, mesh,
                                         setup.shardings)
  return lambda name, state, images, key: cost.xla_flops(
      counted.phase(name).lower(state, images, key))


def run_case(cmd: List[str], env: Optional[Dict[str, str]] = None,
             timeout: Optional[float] = None) -> dict:
  """Runs one worker process and returns the last JSON line it printed.

  A worker that fails raises RuntimeError; one still running after `timeout`
  seconds is killed (subprocess.TimeoutExpired).
  """
  full_env = dict(os.environ, **(env or {}))
  out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=full_env,
                       timeout=timeout)
  if out.returncode:
    raise RuntimeError(f"{cmd[:3]} failed ({out.returncode}):\n{out.stderr[-4000:]}")
  lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
  if not lines:
    raise RuntimeError(f"{cmd[:3]} printed no result:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
  return json.loads(lines[-1])


class Collector:
  """Runs cases one after the other; prints and appends (--out) each result as it arrives."""

  def __init__(self, out_path: Optional[str]):
    self.out_path, self.results = out_path, []

  def run(self, cmd: List[str], env: Optional[Dict[str, str]] = None,
          timeout: Optional[float] = None, **labels) -> dict:
    return self.add(dict(run_case(cmd, env, timeout), **labels))

  def add(self, result: dict) -> dict:
    """Records one result (a worker's, or a case's failure), with the load average."""
    result["load_avg_1min"] = os.getloadavg()[0]
    print(json.dumps(result), flush=True)
    if self.out_path:
      with open(self.out_path, "a") as f:
        f.write(json.dumps(result) + "\n")
    self.results.append(result)
    return result


class Usage:
  """Wall time and this process's resource usage from construction to `since()`."""

  def __init__(self):
    self._t, self._r = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)

  def since(self) -> dict:
    """{'s', 'minor_faults', 'system_s', 'user_s'} since construction (all threads).

    Minor faults are pages the process touched for the first time (or again
    after glibc handed them back): the cost of growing its memory.
    """
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"s": time.perf_counter() - self._t,
            "minor_faults": r.ru_minflt - self._r.ru_minflt,
            "system_s": r.ru_stime - self._r.ru_stime,
            "user_s": r.ru_utime - self._r.ru_utime}


def mean_gemm_peak(results: List[dict], dtype: str = "float32") -> float:
  """Mean of the GEMM-peak cases among `results` (GFLOP/s) for `dtype`
  ('float32': their 'gflops'; otherwise their 'gflops_<dtype>', where measured)."""
  key = "gflops" if dtype == "float32" else f"gflops_{dtype}"
  peaks = [r[key] for r in results if r["impl"] == "gemm_peak" and r.get(key)]
  return sum(peaks) / max(len(peaks), 1)


def anon_huge_pages_mib() -> Optional[int]:
  """This process's memory in transparent huge pages now (MiB), or None where unknown."""
  try:
    with open("/proc/self/smaps_rollup") as f:
      line = next(l for l in f if l.startswith("AnonHugePages:"))
  except (OSError, StopIteration):
    return None
  return int(line.split()[1]) // 1024


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
