"""gen_synth.op_profile: FLOPs read from optimised HLO, and a profile joined with them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_synth import cost
from gen_synth import op_profile
from gen_synth import xla_cpu

_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv(x, w, stride, padding, groups=1):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=_DIMS,
                                      feature_group_count=groups)


_X = jnp.ones((2, 11, 9, 6))
_W = jnp.ones((3, 3, 6, 8))
_G = jnp.ones((2, 6, 5, 8))      # cotangent of _conv(_X, _W, 2, ((1, 1), (1, 1)))
_PAD = ((1, 1), (1, 1))

PROGRAMS = {
    "dot": (lambda a, b: a @ b, (jnp.ones((64, 96)), jnp.ones((96, 80)))),
    "batched dot": (lambda a, b: jnp.einsum("bij,bjk->bik", a, b),
                    (jnp.ones((3, 16, 24)), jnp.ones((3, 24, 8)))),
    "conv, same padding": (lambda x, w: _conv(x, w, 1, "SAME"), (_X, _W)),
    "conv, stride 2, uneven padding": (lambda x, w: _conv(x, w, 2, ((1, 2), (0, 1))), (_X, _W)),
    "grouped conv": (lambda x, w: _conv(x, w[:, :, :3], 1, "SAME", groups=2), (_X, _W)),
    "weight gradient": (lambda x, g: jax.vjp(lambda w: _conv(x, w, 2, _PAD), _W)[1](g)[0],
                        (_X, _G)),
    "input gradient (dilated)": (
        lambda g, w: jax.vjp(lambda x: _conv(x, w, 2, _PAD), _X)[1](g)[0], (_G, _W)),
}


@pytest.mark.parametrize("jit", [jax.jit, xla_cpu.jit], ids=["jax_jit", "xla_cpu_jit"])
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_hlo_flops_equal_xla_cost_analysis(name, jit):
  """Summed over the ops that run (not those inside a fusion), the FLOPs read
  from the optimised HLO are XLA's own count: padding taps and the holes of
  an input dilation left out, fused dots counted once."""
  fn, args = PROGRAMS[name]
  compiled = jit(fn).lower(*args).compile()
  ops = op_profile.hlo_ops(compiled.as_text())
  ours = sum(op.flops for op in ops.values() if not op.fused)
  assert ours > 0
  assert ours == pytest.approx(cost.xla_flops(compiled), rel=1e-9), name


def test_kinds_of_ops():
  def fn(x, w, a):
    y = jnp.tanh(_conv(x, w, 1, "SAME"))                  # convolution, elementwise
    return y.sum(axis=(1, 2)), (a @ a.T).T + 1.0           # reduction, dot, copy
  compiled = xla_cpu.jit(fn).lower(_X, _W, jnp.ones((32, 48))).compile()
  kinds = {op.kind for op in op_profile.hlo_ops(compiled.as_text()).values() if not op.fused}
  assert {"convolution", "gemm", "reduction", "elementwise"} <= kinds, kinds


def test_profile_counts_loop_iterations_and_times_the_call():
  """One profiled call of a GEMM and a loop of elementwise passes: every op is
  found in the trace, a loop body's op once per iteration, the dot's FLOPs
  executed once, the timed ops within the wall time, and the outputs are the
  call's."""
  n = 384

  def fn(a, b, steps):
    y = a @ b
    return jax.lax.fori_loop(0, steps, lambda i, y: jnp.tanh(y * 1.01 + 0.5), y)

  a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n)) / np.sqrt(n)
  steps = jnp.int32(5)                       # a traced trip count: the loop is not unrolled
  compiled = xla_cpu.jit(fn).lower(a, b, steps).compile()
  jax.block_until_ready(compiled(a, b, steps))
  prof, out = op_profile.profile(compiled, a, b, steps)

  np.testing.assert_array_equal(np.asarray(out), np.asarray(compiled(a, b, steps)))
  kinds = prof.by_kind()
  assert kinds["dot+convolution"]["count"] == 1
  assert kinds["dot+convolution"]["gflop"] == pytest.approx(2 * n ** 3 / 1e9)
  loop_ops = [t for t in prof.ops if t.seconds is not None and t.op.kind == "elementwise"
              and t.count == 5]
  assert loop_ops, [(t.op.name, t.count) for t in prof.ops]
  timed = sum(t.seconds for t in prof.ops if t.seconds)
  assert 0 < timed <= prof.wall_s
  assert prof.gemm_s == pytest.approx(prof.wall_s - timed, abs=1e-9)
  table = op_profile.kind_table(prof, peak_gflops=100.0)
  assert "| dot+convolution |" in table and "| the call |" in table
