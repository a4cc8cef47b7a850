"""StyleGAN2 losses: non-saturating logistic, R1, path-length, lazy regularisation.

All functions are pure; the callers (train_steps.py) differentiate them.
"""

import jax
import jax.numpy as jnp
import numpy as np


def generator_loss(fake_logits):
  """Non-saturating logistic G loss: softplus(-D(G(z))), mean over the batch."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


def discriminator_loss(real_logits, fake_logits):
  """Logistic D loss: softplus(D(G(z))) + softplus(-D(x)), mean over the batch."""
  return jnp.mean(jax.nn.softplus(fake_logits)) + jnp.mean(jax.nn.softplus(-real_logits))


def r1_penalty(d_fn, real_images):
  """Per-sample ||grad_x D(x)||^2 [B] and the logits D(x) [B] (R1 of Mescheder et al.)."""
  logits, vjp = jax.vjp(d_fn, real_images)
  (grads,) = vjp(jnp.ones_like(logits))
  return jnp.sum(jnp.square(grads), axis=(1, 2, 3)), logits


def path_length(synthesis_fn, ws, noise_key, noise=None):
  """Per-sample path lengths [B] of StyleGAN2's path-length regulariser.

  |J_w^T y|, y ~ N(0, 1) / sqrt(H W) image-shaped, summed over the w
  dimension, averaged over the num_ws copies, square-rooted. Returns the
  lengths and the generated images. `noise` [B, H, W, 3] (N(0, 1), before the
  1 / sqrt(H W) scale) replaces the draw from `noise_key` when given.
  """
  def project(ws):
    images = synthesis_fn(ws)
    y = jax.random.normal(noise_key, images.shape, images.dtype) if noise is None else noise
    noise_scaled = y.astype(images.dtype) / np.sqrt(images.shape[1] * images.shape[2])
    return jnp.sum(images * noise_scaled), images

  grads, images = jax.grad(project, has_aux=True)(ws)
  lengths = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads), axis=2), axis=1))
  return lengths, images


def path_length_penalty(lengths, pl_mean, decay):
  """((lengths - new_mean)^2 per sample, new_mean); new_mean = lerp(pl_mean, mean(lengths), decay).

  As the official StyleGAN2Loss, the penalty's gradient also flows through
  new_mean (it depends on this batch's lengths with weight `decay`); the
  returned running mean is detached.
  """
  new_mean = pl_mean + (jnp.mean(lengths) - pl_mean) * decay
  return jnp.square(lengths - new_mean), jax.lax.stop_gradient(new_mean)


def lazy_regularization_adam(lr, b1, b2, interval):
  """StyleGAN2's adjustment for a regulariser run every `interval` steps.

  ratio = interval / (interval + 1); lr * ratio, betas ** ratio.
  Without lazy regularisation (interval None/0) the values are unchanged.
  """
  if not interval:
    return lr, b1, b2
  ratio = interval / (interval + 1)
  return lr * ratio, b1 ** ratio, b2 ** ratio
