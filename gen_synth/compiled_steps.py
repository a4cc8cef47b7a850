"""The train step as compiled phases, and the two models it trains.

`CompiledSteps` is the step `train.train_and_evaluate` runs; `build_models`
builds G and D from a config. Both live here, apart from the training loop,
so that what measures or checks a step (experiments/benchmarks, a GPU or TPU
check) needs JAX, Flax, optax and ml_collections only: no TensorFlow, tfds
or clu, which the loop needs for its data and logging. `train.CompiledSteps`
and `train.build_models` are these.
"""

import functools

import jax

from gen_synth import sampling
from gen_synth import sharding as sharding_lib
from gen_synth import train_steps
from gen_synth import xla_cpu
from gen_synth.models import discriminator as discriminator_lib


def build_models(config):
  """(generator, discriminator) of `config`, in its `train.compute_dtype`."""
  dtype = config.train.compute_dtype
  generator = sampling.build_model(config, dtype=dtype)
  discriminator = discriminator_lib.build_discriminator(
      config.discriminator, dtype=sampling.models.DTYPES[dtype])
  return generator, discriminator


class CompiledSteps:
  """The train step as separately jit-compiled phases (`train_steps.PHASES`).

  Each phase (Gmain, Greg, Dmain, Dreg, EMA + step) is compiled once, whatever
  the combination of lazy regularisers a step runs: compiling whole-step
  variants would compile Gmain and Dmain four times. Each call donates the
  state, so the phases update it in place.

  On the CPU backend each phase is waited for before the next is dispatched:
  XLA:CPU allocates a phase's buffers when it is dispatched, so with freed
  memory kept for reuse (gen_synth.host_memory) an overlapping dispatch would
  hold two phases' temporaries at once (res 128, batch 4: peak RSS 6.1-6.2 GiB
  against 4.5 GiB serial). The phases run one after another on a CPU anyway.
  """

  def __init__(self, config, generator, discriminator, g_tx, d_tx, mesh, state_shardings,
               record=False):
    self._config, self._cache = config, {}
    self._kwargs = dict(generator=generator, discriminator=discriminator,
                        train_config=config.train, g_tx=g_tx, d_tx=d_tx,
                        batch_sharding=sharding_lib.batch_sharding(mesh),
                        inject_nan_at=config.train.inject_nan_at_step, record=record)
    self._in = (state_shardings, sharding_lib.batch_sharding(mesh),
                sharding_lib.replicated(mesh))
    self._out = (state_shardings, sharding_lib.replicated(mesh))
    self._serial = jax.default_backend() == "cpu"

  def due(self, step: int):
    t = self._config.train
    do_pl = bool(t.pl_weight) and step % t.pl_interval == 0
    do_r1 = bool(t.r1_gamma) and step % t.r1_interval == 0
    return do_pl, do_r1

  def phase(self, name: str):
    """The jitted phase `name`: (state, images, root_key) -> (state, metrics)."""
    if name not in self._cache:
      fn = functools.partial(train_steps.run_phase, name, **self._kwargs)
      self._cache[name] = xla_cpu.jit(fn, in_shardings=self._in, out_shardings=self._out,
                                      donate_argnums=0)
    return self._cache[name]

  def __call__(self, step: int, state, images, root_key):
    phase_metrics = []
    for name in train_steps.due_phases(*self.due(step)):
      state, metrics = self.phase(name)(state, images, root_key)
      if self._serial:
        jax.block_until_ready(state)
      phase_metrics.append(metrics)
    return state, train_steps.merge_metrics(phase_metrics)
