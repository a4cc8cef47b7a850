"""The StyleGAN2 residual discriminator: structure, parameter count, mbstd."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_synth.models import discriminator as d_lib


def official_d_params(res, cbase=32768, cmax=512):
  """Parameters of StyleGAN2-ADA's `Discriminator(architecture='resnet', c_dim=0)`.

  Written from the official layer list (training/networks.py as CREPS ships
  it): DiscriminatorBlock = fromrgb 1x1 (first block only), conv0 3x3,
  conv1 3x3 down, skip 1x1 down without bias; epilogue = mbstd (+1 channel),
  conv 3x3, fc (C*4*4 -> C), out (C -> 1). torch is not installed here, so
  the official module itself could not be run; this is its arithmetic.
  """
  ch = lambda r: min(cbase // r, cmax)
  total, r = 0, res
  while r > 4:
    tmp, out = ch(r), ch(r // 2)
    if r == res:
      total += 3 * tmp + tmp
    total += tmp * tmp * 9 + tmp + tmp * out * 9 + out + tmp * out
    r //= 2
  c4 = ch(4)
  total += (c4 + 1) * c4 * 9 + c4 + c4 * 16 * c4 + c4 + c4 + 1
  return total


@pytest.mark.parametrize("res,expected", [(256, 28_864_129), (512, 28_982_849),
                                          (1024, 29_012_513)])
def test_param_count_equals_official_structure(res, expected):
  model = d_lib.Discriminator(resolution=res)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                jnp.zeros((4, res, res, 3))))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
  assert count == official_d_params(res) == expected


def test_minibatch_stddev_groups_like_the_official_reshape():
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 4, 4, 6))
  y = d_lib.minibatch_stddev(x, group_size=4)
  assert y.shape == (8, 4, 4, 7)
  # Official: groups are samples {j, j + N/G, j + 2N/G, ...}.
  xn = np.asarray(x, np.float64)
  for j in range(2):
    members = xn[j::2]
    expected = np.mean(np.sqrt(np.var(members, axis=0) + 1e-8))
    for n in range(j, 8, 2):
      np.testing.assert_allclose(y[n, :, :, -1], expected, rtol=1e-5)


def test_one_call_on_two_interleaved_batches_equals_two_calls():
  """D(pair, num_batches=2) = D(a), D(b), logits and parameter gradients.

  Dmain runs D once on its fakes and reals interleaved; the minibatch stddev
  must still group each batch on its own. Two samples each: the group size
  (4) is clamped to each batch's 2, where one call on 4 samples would make
  one group of all 4.
  """
  model = d_lib.Discriminator(resolution=16, channel_base=256, channel_max=32)
  ka, kb, kp = jax.random.split(jax.random.PRNGKey(0), 3)
  a = jax.random.normal(ka, (2, 16, 16, 3))
  b = 3.0 * jax.random.normal(kb, (2, 16, 16, 3)) + 1.0
  params = model.init(kp, a)["params"]

  def separate(p):
    la = model.apply({"params": p}, a)
    lb = model.apply({"params": p}, b)
    return jnp.sum(jax.nn.softplus(la)) + jnp.sum(jax.nn.softplus(-lb)), (la, lb)

  def paired(p):
    both = jnp.stack([a, b], axis=1).reshape((4, 16, 16, 3))
    logits = model.apply({"params": p}, both, num_batches=2).reshape(2, 2)
    la, lb = logits[:, 0], logits[:, 1]
    return jnp.sum(jax.nn.softplus(la)) + jnp.sum(jax.nn.softplus(-lb)), (la, lb)

  (_, want), want_grads = jax.jit(jax.value_and_grad(separate, has_aux=True))(params)
  (_, got), got_grads = jax.jit(jax.value_and_grad(paired, has_aux=True))(params)
  for g, w in zip(jax.tree.leaves((got, got_grads)), jax.tree.leaves((want, want_grads))):
    np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(w))) + 1e-7)
  # One stddev group over all 4 samples gives other logits.
  mixed = model.apply({"params": params}, jnp.stack([a, b], axis=1).reshape((4, 16, 16, 3)))
  assert float(jnp.max(jnp.abs(mixed.reshape(2, 2)[:, 0] - want[0]))) > 1e-3


def test_forward_is_finite_and_rejects_wrong_size():
  model = d_lib.Discriminator(resolution=16, channel_base=256, channel_max=32)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 16, 16, 3))
  variables = model.init(jax.random.PRNGKey(1), x)
  logits = jax.jit(model.apply)(variables, x)
  assert logits.shape == (4,) and np.isfinite(np.asarray(logits)).all()
  with pytest.raises(ValueError, match="expects 16x16"):
    model.apply(variables, jnp.zeros((4, 32, 32, 3)))
