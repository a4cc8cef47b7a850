"""StyleGAN2 mapping network z -> w, with the tracked w_avg and truncation."""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from gen_synth.models import layers


class MappingNetwork(nn.Module):
  """z [B, z_dim] -> ws [B, num_ws, w_dim].

  z is normalised by its second moment, then `num_layers` lrelu layers with
  lr multiplier 0.01 (all biases 0). `w_avg` ([w_dim], collection 'stats') is
  the moving average of w (beta 0.998) used by truncation; it is updated only
  when `update_w_avg` is true and the 'stats' collection is mutable.
  """
  z_dim: int = 512
  w_dim: int = 512
  num_ws: int = 15
  num_layers: int = 8
  lr_mul: float = 0.01
  w_avg_beta: float = 0.998

  @nn.compact
  def __call__(self, z, truncation_psi=1.0, truncation_cutoff: Optional[int] = None,
               update_w_avg: bool = False):
    x = layers.normalize_2nd_moment(z.astype(jnp.float32))
    widths = (self.w_dim,) * self.num_layers
    w = layers.MLP(widths, activation="lrelu", lr_mul=self.lr_mul, name="net")(x)
    w_avg = self.variable("stats", "w_avg", jnp.zeros, (self.w_dim,), jnp.float32)
    if update_w_avg and not self.is_initializing():
      batch_mean = jnp.mean(w, axis=0)
      w_avg.value = batch_mean + (w_avg.value - batch_mean) * self.w_avg_beta
    ws = jnp.broadcast_to(w[:, None, :], (w.shape[0], self.num_ws, self.w_dim))
    return truncate(ws, w_avg.value, truncation_psi, truncation_cutoff)


def truncate(ws, w_avg, psi, cutoff: Optional[int] = None):
  """w_avg + psi (w - w_avg) on the first `cutoff` ws (all when None)."""
  if isinstance(psi, (int, float)) and psi == 1:
    return ws
  truncated = w_avg + psi * (ws - w_avg)
  if cutoff is None:
    return truncated
  mask = (jnp.arange(ws.shape[1]) < cutoff)[None, :, None]
  return jnp.where(mask, truncated, ws)
