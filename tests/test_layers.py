"""Equalized/modulated layers, mapping, truncation and seed latents."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_synth import sampling
from gen_synth.models import layers
from gen_synth.models import mapping


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_dense_equals_per_sample_weights(demodulate):
  layer = layers.ModulatedDense(24, demodulate=demodulate, activation="linear")
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 7, 16))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 32))
  v = layer.init(jax.random.PRNGKey(2), x, w)
  v = jax.tree.map(lambda p: p + 0.1, v)  # non-trivial bias
  got = layer.apply(v, x, w)
  p = v["params"]
  styles = layers.EqualDense(16, bias_init=1.0).apply({"params": p["affine"]}, w)
  if not demodulate:
    styles = styles / np.sqrt(16)
  ref = layers.modulated_dense_reference(x.reshape(3, 35, 16), styles, p["kernel"],
                                         p["bias"], demodulate=demodulate)
  # f32 GEMMs summed in a different order: relative rounding ~1e-6.
  np.testing.assert_allclose(got.reshape(3, 35, 24), ref, rtol=1e-5, atol=1e-5)


def test_equal_dense_runtime_gain_and_lr_mul():
  layer = layers.EqualDense(8, lr_mul=0.01, bias_init=3.0)
  x = jnp.ones((2, 50))
  v = layer.init(jax.random.PRNGKey(0), x)
  kernel, bias = v["params"]["kernel"], v["params"]["bias"]
  # Stored weight ~ N(0,1)/lr_mul; stored bias = bias_init.
  assert 50 < np.std(np.asarray(kernel)) < 150
  np.testing.assert_array_equal(bias, 3.0)
  expected = x @ (kernel * 0.01 / np.sqrt(50)) + bias * 0.01
  np.testing.assert_allclose(layer.apply(v, x), expected, rtol=1e-5)


def test_bias_act_gain_then_clamp():
  x = jnp.array([-10.0, -1.0, 1.0, 300.0])
  y = layers.bias_act(x, jnp.zeros(()), "lrelu", clamp=256.0)
  np.testing.assert_allclose(y, [-2 * np.sqrt(2), -0.2 * np.sqrt(2), np.sqrt(2), 256.0],
                             rtol=1e-6)


def test_mapping_w_avg_update_and_truncation():
  net = mapping.MappingNetwork(z_dim=16, w_dim=16, num_ws=5, num_layers=2)
  z = jax.random.normal(jax.random.PRNGKey(0), (6, 16))
  v = net.init(jax.random.PRNGKey(1), z)
  np.testing.assert_array_equal(v["stats"]["w_avg"], 0.0)
  ws, updated = net.apply(v, z, update_w_avg=True, mutable=["stats"])
  expected = np.mean(np.asarray(ws[:, 0]), axis=0) * (1 - 0.998)
  # lerp vs. (1 - beta) * mean: cancellation leaves ~1e-7 absolute error.
  np.testing.assert_allclose(updated["stats"]["w_avg"], expected, rtol=1e-4, atol=1e-6)
  v = {**v, **updated}
  ws0 = net.apply(v, z, truncation_psi=0.0)
  np.testing.assert_array_equal(ws0, np.broadcast_to(updated["stats"]["w_avg"], ws0.shape))
  ws_cut = net.apply(v, z, truncation_psi=0.0, truncation_cutoff=2)
  np.testing.assert_allclose(ws_cut[:, :2], ws0[:, :2])
  np.testing.assert_allclose(ws_cut[:, 2:], ws[:, 2:], rtol=1e-6)


def test_seed_latents_match_random_state():
  z = sampling.seed_latents([0, 5, 123], 512)
  assert z.dtype == np.float32 and z.shape == (3, 512)
  for row, seed in zip(z, [0, 5, 123]):
    np.testing.assert_array_equal(row, np.random.RandomState(seed).randn(1, 512)[0].astype(np.float32))
  assert sampling.parse_seeds("0-3,7") == [0, 1, 2, 3, 7]


@pytest.mark.parametrize("columns", [24, 3])     # 3: the padded RGB path (>= 4096 rows)
def test_matmul_last_accumulates_low_precision_in_float32(columns, monkeypatch):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4096, 64)).astype(jnp.bfloat16)
  kernel = jax.random.normal(jax.random.PRNGKey(1), (64, columns)).astype(jnp.bfloat16)
  exact = np.einsum("bni,io->bno", np.asarray(x, np.float64), np.asarray(kernel, np.float64))
  # CPU: the product stays float32 (the passes after it run in float32), and it
  # is the float32 sum of the bfloat16 operands (rounding ~1e-6 of its size,
  # where a bfloat16 result would be off by ~4e-3).
  y = jax.jit(layers.matmul_last)(x, kernel)
  assert y.dtype == jnp.float32 and y.shape == (2, 4096, columns)
  np.testing.assert_allclose(y, exact, rtol=0, atol=1e-5 * np.abs(exact).max())
  # Other backends: the dot as before, in the operands' dtype.
  monkeypatch.setattr(layers.jax, "default_backend", lambda: "gpu")
  y = layers.matmul_last(x, kernel)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y, np.float64), exact, rtol=1e-2,
                             atol=1e-2 * np.abs(exact).max())
  # float32 operands are untouched.
  y32 = layers.matmul_last(x.astype(jnp.float32), kernel.astype(jnp.float32))
  assert y32.dtype == jnp.float32
