"""Pure training-step functions: the StyleGAN2 phases of one iteration, compiled as one step.

One iteration, as StyleGAN2-ADA's training loop runs its phases:
  Gmain  G <- Adam(softplus(-D(G(z))))
  Greg   every pl_interval steps: G <- Adam(pl_weight * pl_interval * (|J^T y| - a)^2)
  Dmain  D <- Adam(softplus(D(G(z))) + softplus(-D(x)));  w_avg tracked here
  Dreg   every r1_interval steps: D <- Adam(gamma / 2 * r1_interval * |grad D(x)|^2)
  EMA    G_ema <- G + (G_ema - G) * 0.5 ** (batch / ema_nimg)
Main and regularisation phases share one Adam per network, whose lr and betas
carry the lazy-regularisation adjustment. With augmentation on
(`config.train.augment`, see `augment_mode`), D sees every image, real or
fake, through the StyleGAN2-ADA pipe (`gen_synth.augment`) with probability
`state.aug_p`; with 'ada', p follows the sign of D(real) (ADA, updated in
the EMA phase every ada_interval steps). Each phase draws its own latents
from fold_in(fold_in(root_key, step), phase). `run_phase` is one phase;
`train_step` runs the due phases in one function (tests, parity); the loop
compiles each phase once (`compiled_steps.CompiledSteps`).
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from gen_synth import augment as augment_lib
from gen_synth import losses

# Purpose ids folded into the per-step key.
_GMAIN, _GREG, _DMAIN, _DREG, _MIX, _NOISE, _PL_NOISE, _INJECT, _AUG = range(9)


@flax.struct.dataclass
class TrainState:
  """Everything a training run carries from step to step."""
  step: jax.Array          # int32 []
  g_params: Any
  g_ema_params: Any
  d_params: Any
  g_opt: Any
  d_opt: Any
  fixed: Any               # G's non-trainable 'fixed' collection (Fourier frequencies)
  stats: Any               # G's 'stats' collection (w_avg); G_ema shares it
  pl_mean: jax.Array       # float32 []
  aug_p: jax.Array         # float32 [], the augmentation probability (ADA's p)
  ada_signs: jax.Array     # float32 [2], (sum of sign(D(aug(real))), count) since ADA's last update

  def generator_variables(self, ema=True):
    params = self.g_ema_params if ema else self.g_params
    return {"params": params, "fixed": self.fixed, "stats": self.stats}


def make_optimizers(train_config):
  """(g_tx, d_tx): Adam(b1, b2, eps) with StyleGAN2's lazy-regularisation adjustment."""
  t = train_config
  def adam(lr, interval):
    lr, b1, b2 = losses.lazy_regularization_adam(lr, t.adam_b1, t.adam_b2, interval)
    return optax.adam(lr, b1=b1, b2=b2, eps=t.adam_eps)
  g_lazy = bool(t.pl_weight) or t.get("lazy_reg_adjust", False)
  return adam(t.g_lr, t.pl_interval if g_lazy else 0), adam(t.d_lr, t.r1_interval)


def ema_beta(train_config, step):
  """0.5 ** (batch / ema_nimg), with ema_nimg ramped up as cur_nimg * ema_rampup."""
  t = train_config
  ema_nimg = t.ema_kimg * 1000.0
  if t.ema_rampup:
    cur_nimg = step.astype(jnp.float32) * t.batch_size
    ema_nimg = jnp.minimum(ema_nimg, cur_nimg * t.ema_rampup)
  return 0.5 ** (t.batch_size / jnp.maximum(ema_nimg, 1e-8))


AUGMENT_MODES = ("none", "ada", "fixed")


def augment_mode(train_config):
  """config.train.augment -> (mode, initial p): 'none' | 'ada' | 'fixed:<p>'.

  'none': D sees the images as they are (no pipe at all).
  'ada': the pipe `train_config.augment_pipe` with p starting at
         `augment_p` and adjusted toward `ada_target` (official `--aug=ada`).
  'fixed:<p>': the pipe at a constant p (official `--aug=fixed --p=<p>`).
  """
  spec = str(train_config.get("augment", "none"))
  mode, _, value = spec.partition(":")
  if mode not in AUGMENT_MODES or (mode == "fixed") != bool(value):
    raise ValueError(f"train.augment must be 'none', 'ada' or 'fixed:<p>', got {spec!r}")
  if mode == "fixed":
    return mode, float(value)
  return mode, float(train_config.get("augment_p", 0.0)) if mode == "ada" else 0.0


def _latents(key, batch, z_dim, batch_sharding, given=None):
  z = jax.random.normal(key, (batch, z_dim), jnp.float32) if given is None else given
  if batch_sharding is not None:
    z = jax.lax.with_sharding_constraint(z, batch_sharding)
  return z


PHASES = ("g_main", "g_pl", "d_main", "d_r1", "finish")


def due_phases(do_pl: bool, do_r1: bool):
  """The phases one iteration runs, in the official order."""
  return tuple(p for p in PHASES if (p != "g_pl" or do_pl) and (p != "d_r1" or do_r1))


def train_step(state: TrainState, real_images, root_key, *, generator, discriminator,
               train_config, g_tx, d_tx, do_pl: bool, do_r1: bool, batch_sharding=None,
               inject_nan_at=-1, record: bool = False, inputs=None):
  """One training iteration. real_images [B, R, R, 3] in [-1, 1] -> (state, metrics).

  The phases of `due_phases(do_pl, do_r1)` run one after the other
  (`run_phase`); the training loop jits each phase on its own instead
  (`compiled_steps.CompiledSteps`), with the same numbers up to float rounding.

  With `record`, metrics["record"] also holds what each phase computed before its
  optimiser step: the gradients {"g_main", "g_pl", "d_main", "d_r1"} (pytrees
  like the params; a phase not due this step is absent) and the per-sample
  values {"fake_logits_g" [B], "real_logits" [B], "fake_logits" [B],
  "pl_penalty" [B // pl_batch_shrink], "r1_penalty" [B]}. Tests compare these.

  `inputs` (tests only; the training loop never passes it) supplies the random
  draws of the step instead of the keys: {"z_gmain" [B, z_dim], "z_greg"
  [B // pl_batch_shrink, z_dim], "z_dmain" [B, z_dim], "pl_noise"
  [B // pl_batch_shrink, R, R, 3] (N(0, 1))}, so that one iteration can be
  replayed on the official code's latents and noise.
  """
  kwargs = dict(generator=generator, discriminator=discriminator, train_config=train_config,
                g_tx=g_tx, d_tx=d_tx, batch_sharding=batch_sharding,
                inject_nan_at=inject_nan_at, record=record, inputs=inputs)
  phase_metrics = []
  for phase in due_phases(do_pl, do_r1):
    state, m = run_phase(phase, state, real_images, root_key, **kwargs)
    phase_metrics.append(m)
  return state, merge_metrics(phase_metrics)


def merge_metrics(phase_metrics):
  """The metrics of one iteration's phases -> one dict with 'finite' (and 'record')."""
  metrics, recorded = {}, {"grads": {}}
  finite = []
  for m in phase_metrics:
    m = dict(m)
    finite.append(m.pop("finite"))
    rec = m.pop("record", None)
    if rec is not None:
      recorded["grads"].update(rec.pop("grads", {}))
      recorded.update(rec)
    metrics.update(m)
  metrics["finite"] = jnp.all(jnp.stack(finite))
  if any("record" in m for m in phase_metrics):
    metrics["record"] = recorded
  return metrics


def run_phase(phase: str, state: TrainState, real_images, root_key, *, generator,
              discriminator, train_config, g_tx, d_tx, batch_sharding=None,
              inject_nan_at=-1, record: bool = False, inputs=None):
  """One phase of the iteration at `state.step` -> (state, metrics of this phase).

  g_main, g_pl and d_main/d_r1 update G's and D's params and Adam states (and
  w_avg, pl_mean); 'finish' applies the EMA and advances the step. Each phase
  draws its latents from fold_in(fold_in(root_key, step), purpose), so running
  the phases one jit at a time or all in one gives the same draws.
  metrics["finite"]: every metric of this phase is finite.
  """
  given = dict(inputs or {})
  t = train_config
  batch = real_images.shape[0]
  key = jax.random.fold_in(root_key, state.step)
  keys = [jax.random.fold_in(key, i) for i in range(_AUG + 1)]
  num_ws, z_dim = generator.num_ws, generator.z_dim
  metrics, recorded = {}, {"grads": {}}

  def gen_vars(params, stats=None):
    return {"params": params, "fixed": state.fixed,
            "stats": state.stats if stats is None else stats}

  def mapping(params, z, mix_key, update_w_avg=False):
    out = generator.apply(gen_vars(params), z, update_w_avg=update_w_avg,
                          method="mapping", mutable=["stats"] if update_w_avg else False)
    ws, stats = out if update_w_avg else (out, None)
    if t.style_mixing_prob > 0:
      k_cut, k_prob, k_z = jax.random.split(mix_key, 3)
      cutoff = jax.random.randint(k_cut, (), 1, num_ws)
      cutoff = jnp.where(jax.random.uniform(k_prob) < t.style_mixing_prob, cutoff, num_ws)
      ws2 = generator.apply(gen_vars(params), jax.random.normal(k_z, z.shape), method="mapping")
      ws = jnp.where(jnp.arange(num_ws)[None, :, None] < cutoff, ws, ws2)
    return ws, stats

  def synthesis(params, ws, noise_key):
    return generator.apply(gen_vars(params), ws, method="synthesis",
                           rngs={"noise": noise_key})

  aug_mode, fixed_p = augment_mode(t)
  aug_key = keys[_AUG]

  def d_input(images, aug_id):
    """augment(images): p = state.aug_p ('ada') or the configured constant ('fixed')."""
    if aug_mode == "none":
      return images
    p = state.aug_p if aug_mode == "ada" else fixed_p
    return augment_lib.augment(jax.random.fold_in(aug_key, aug_id), images, p,
                               t.get("augment_pipe", "bgc"))

  def d_apply(d_params, images, aug_id):
    """D(augment(images))."""
    return discriminator.apply({"params": d_params}, d_input(images, aug_id))

  def d_apply_pair(d_params, images_a, aug_a, images_b, aug_b):
    """(D(augment(a)), D(augment(b))) as one D call on both batches, interleaved.

    The same logits as two calls (minibatch stddev groups each batch on its
    own), with D's layers run once over twice the batch: each weight gradient
    is one convolution over both batches instead of two (D forward+backward,
    res 256, 4 + 4 images: 12.2 s against 12.7 s on the 2-core AMD EPYC).
    Stacking on a new second axis keeps a batch-sharded pair local to its
    devices.
    """
    a, b = d_input(images_a, aug_a), d_input(images_b, aug_b)
    both = jnp.stack([a, b], axis=1).reshape((2 * a.shape[0],) + a.shape[1:])
    logits = discriminator.apply({"params": d_params}, both, num_batches=2)
    logits = logits.reshape(a.shape[0], 2)
    return logits[:, 0], logits[:, 1]

  def with_signs(state, real_logits):
    """ADA's statistic: the signs of D's logits on (augmented) reals, summed."""
    sign_sum, count = augment_lib.ada_accumulate(state.ada_signs[0], state.ada_signs[1],
                                                 real_logits)
    return state.replace(ada_signs=jnp.stack([sign_sum, count]))

  # Where w_avg is tracked: 'g_phases' = the official CREPS mapping (it updates
  # when training and not update_emas, i.e. on Gmain's and Greg's latents);
  # 'd_phase' = StyleGAN2-ADA's (update_emas=True: on Dmain's latents).
  w_avg_in_g = t.get("w_avg_update", "g_phases") == "g_phases"

  if phase == "g_main":
    # Gmain: G <- Adam(softplus(-D(G(z))))
    def g_main_loss(g_params):
      z = _latents(keys[_GMAIN], batch, z_dim, batch_sharding, given.get("z_gmain"))
      ws, new_stats = mapping(g_params, z, jax.random.fold_in(keys[_MIX], 0), w_avg_in_g)
      fake = synthesis(g_params, ws, jax.random.fold_in(keys[_NOISE], 0))
      logits = d_apply(state.d_params, fake, 0)
      return losses.generator_loss(logits), (logits, new_stats)

    (g_loss, (fake_logits_g, new_stats)), g_grads = jax.value_and_grad(
        g_main_loss, has_aux=True)(state.g_params)
    if inject_nan_at >= 0:   # test hook: a NaN loss at one step
      g_loss = jnp.where(state.step == inject_nan_at, jnp.nan, g_loss)
      g_grads = jax.tree.map(
          lambda g: g * jnp.where(state.step == inject_nan_at, jnp.nan, 1.0), g_grads)
    updates, g_opt = g_tx.update(g_grads, state.g_opt, state.g_params)
    state = state.replace(g_params=optax.apply_updates(state.g_params, updates), g_opt=g_opt,
                          stats=new_stats["stats"] if w_avg_in_g else state.stats)
    metrics.update(g_loss=g_loss, g_grad_norm=optax.tree.norm(g_grads),
                   fake_logits_g=jnp.mean(fake_logits_g))
    recorded["grads"]["g_main"], recorded["fake_logits_g"] = g_grads, fake_logits_g

  elif phase == "g_pl":
    # Greg: G <- Adam(pl_weight * pl_interval * (|J^T y| - a)^2)
    pl_batch = max(batch // t.pl_batch_shrink, 1)

    def g_pl_loss(g_params):
      z = _latents(keys[_GREG], pl_batch, z_dim, batch_sharding, given.get("z_greg"))
      ws, pl_stats = mapping(g_params, z, jax.random.fold_in(keys[_MIX], 1), w_avg_in_g)
      lengths, _ = losses.path_length(
          lambda w: synthesis(g_params, w, jax.random.fold_in(keys[_NOISE], 1)),
          ws, keys[_PL_NOISE], given.get("pl_noise"))
      penalty, new_mean = losses.path_length_penalty(lengths, state.pl_mean, t.pl_decay)
      return jnp.mean(penalty) * t.pl_weight * t.pl_interval, (penalty, new_mean, pl_stats)

    (_, (pl_penalty, pl_mean, pl_stats)), pl_grads = jax.value_and_grad(
        g_pl_loss, has_aux=True)(state.g_params)
    updates, g_opt = g_tx.update(pl_grads, state.g_opt, state.g_params)
    state = state.replace(g_params=optax.apply_updates(state.g_params, updates), g_opt=g_opt,
                          pl_mean=pl_mean,
                          stats=pl_stats["stats"] if w_avg_in_g else state.stats)
    metrics.update(pl_penalty=jnp.mean(pl_penalty), pl_mean=pl_mean,
                   pl_grad_norm=optax.tree.norm(pl_grads))
    recorded["grads"]["g_pl"], recorded["pl_penalty"] = pl_grads, pl_penalty

  elif phase == "d_main":
    # Dmain: D <- Adam(softplus(D(G(z))) + softplus(-D(x)))
    z = _latents(keys[_DMAIN], batch, z_dim, batch_sharding, given.get("z_dmain"))
    ws, new_stats = mapping(state.g_params, z, jax.random.fold_in(keys[_MIX], 2),
                            not w_avg_in_g)
    if not w_avg_in_g:
      state = state.replace(stats=new_stats["stats"])
    fake = jax.lax.stop_gradient(
        synthesis(state.g_params, ws, jax.random.fold_in(keys[_NOISE], 2)))

    def d_main_loss(d_params):
      fake_logits, real_logits = d_apply_pair(d_params, fake, 1, real_images, 2)
      return losses.discriminator_loss(real_logits, fake_logits), (real_logits, fake_logits)

    (d_loss, (real_logits, fake_logits)), d_grads = jax.value_and_grad(
        d_main_loss, has_aux=True)(state.d_params)
    updates, d_opt = d_tx.update(d_grads, state.d_opt, state.d_params)
    state = state.replace(d_params=optax.apply_updates(state.d_params, updates), d_opt=d_opt)
    state = with_signs(state, real_logits)
    metrics.update(d_loss=d_loss, d_grad_norm=optax.tree.norm(d_grads),
                   real_logits=jnp.mean(real_logits), fake_logits=jnp.mean(fake_logits),
                   real_signs=jnp.mean(jnp.sign(real_logits)))
    recorded["grads"]["d_main"] = d_grads
    recorded.update(real_logits=real_logits, fake_logits=fake_logits)

  elif phase == "d_r1":
    # Dreg: D <- Adam(gamma / 2 * r1_interval * |grad D(x)|^2)
    # R1 is taken w.r.t. the images before augmentation (official).
    def d_r1_loss(d_params):
      penalty, logits = losses.r1_penalty(lambda x: d_apply(d_params, x, 3), real_images)
      return jnp.mean(penalty) * (t.r1_gamma / 2) * t.r1_interval, (penalty, logits)

    (_, (r1, r1_logits)), r1_grads = jax.value_and_grad(d_r1_loss, has_aux=True)(
        state.d_params)
    updates, d_opt = d_tx.update(r1_grads, state.d_opt, state.d_params)
    state = state.replace(d_params=optax.apply_updates(state.d_params, updates), d_opt=d_opt)
    state = with_signs(state, jax.lax.stop_gradient(r1_logits))   # official: Dreg reports too
    metrics.update(r1_penalty=jnp.mean(r1), r1_grad_norm=optax.tree.norm(r1_grads))
    recorded["grads"]["d_r1"], recorded["r1_penalty"] = r1_grads, r1

  elif phase == "finish":
    # EMA: G_ema <- G + (G_ema - G) * beta; then the next step. ADA: after every
    # ada_interval-th step, p moves toward r_t = mean sign(D(aug(real))) over the
    # interval (official: batch_idx % ada_interval == 0, batch_idx counted after the step).
    beta = ema_beta(t, state.step)
    g_ema_params = jax.tree.map(lambda p, e: p + (e - p) * beta, state.g_params,
                                state.g_ema_params)
    step = state.step + 1
    adjust_now = step % t.get("ada_interval", 4) == 0
    aug_p = state.aug_p
    if aug_mode == "ada":
      new_p = augment_lib.ada_update(state.aug_p, state.ada_signs[0], state.ada_signs[1],
                                     t.batch_size, t.get("ada_interval", 4),
                                     t.get("ada_target", 0.6), t.get("ada_kimg", 500))
      aug_p = jnp.where(adjust_now, new_p, state.aug_p)
    ada_signs = jnp.where(adjust_now, jnp.zeros_like(state.ada_signs), state.ada_signs)
    state = state.replace(step=step, g_ema_params=g_ema_params, aug_p=aug_p,
                          ada_signs=ada_signs)
    metrics.update(ema_beta=beta, g_param_norm=optax.tree.norm(state.g_params), aug_p=aug_p)

  else:
    raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")

  metrics["finite"] = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
  if record:
    metrics["record"] = recorded
  return state, metrics


def init_state(generator, discriminator, g_tx, d_tx, key, resolution,
               train_config=None) -> TrainState:
  """A fresh TrainState (call under jax.jit with out_shardings).

  `train_config` sets the initial augmentation p (`augment_mode`); without it p = 0.
  """
  k_g, k_d = jax.random.split(key)
  z = jnp.zeros((1, generator.z_dim), jnp.float32)
  size = 8 if getattr(generator, "pixel_independent", False) else None  # cheap init
  g_vars = generator.init({"params": k_g, "noise": k_g}, z, height=size, width=size)
  d_vars = discriminator.init(k_d, jnp.zeros((4, resolution, resolution, 3), jnp.float32))
  g_params, d_params = g_vars["params"], d_vars["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32), g_params=g_params, g_ema_params=g_params,
      d_params=d_params, g_opt=g_tx.init(g_params), d_opt=d_tx.init(d_params),
      fixed=g_vars.get("fixed", {}), stats=g_vars["stats"],
      pl_mean=jnp.zeros((), jnp.float32), **fresh_augment_state(train_config))


def fresh_augment_state(train_config):
  """{'aug_p', 'ada_signs'} of a run that starts now (p from `augment_mode`)."""
  _, p = augment_mode(train_config) if train_config is not None else ("none", 0.0)
  return dict(aug_p=jnp.full((), p, jnp.float32), ada_signs=jnp.zeros((2,), jnp.float32))
