"""gen_synth.xla_cpu: the XLA:CPU kernel choice is made per executable, on CPU only."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_synth import xla_cpu


def _ynn_fusions(hlo_text):
  """The bodies of the YNNPACK fusions of compiled HLO text (their called computations)."""
  called = [line.split("calls=")[1].split(",")[0].strip("%") for line in hlo_text.splitlines()
            if '"__ynn_fusion"' in line and "calls=" in line]
  bodies, current = {}, None
  for line in hlo_text.splitlines():
    if line and not line.startswith(" ") and "{" in line:
      current = line.split()[0].lstrip("%")
      bodies[current] = []
    elif current is not None:
      bodies[current].append(line)
  return ["\n".join(bodies.get(name, [])) for name in called]


def test_options_on_cpu_only_and_user_flags_win(monkeypatch):
  # The backend starts (the probe compiles) with conftest's 8 devices, not
  # under the XLA_FLAGS this test takes away: later tests in this process
  # need them.
  assert jax.device_count() == 8
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert xla_cpu.compiler_options("gpu") is None
  assert xla_cpu.compiler_options("tpu") is None
  # The pinned jaxlib knows both options: gen_synth's choice is in effect.
  assert xla_cpu.compiler_options("cpu") == {
      xla_cpu.OPTION: xla_cpu.YNN_FUSIONS, xla_cpu.OPT_LEVEL_OPTION: xla_cpu.OPT_LEVEL}
  # Each option the user sets wins; the other stays.
  monkeypatch.setenv("XLA_FLAGS", f"--{xla_cpu.OPTION}=+reduce")
  assert xla_cpu.compiler_options("cpu") == {xla_cpu.OPT_LEVEL_OPTION: xla_cpu.OPT_LEVEL}
  monkeypatch.setenv("XLA_FLAGS", f"--{xla_cpu.OPT_LEVEL_OPTION}=3")
  assert xla_cpu.compiler_options("cpu") == {xla_cpu.OPTION: xla_cpu.YNN_FUSIONS}
  monkeypatch.setenv("XLA_FLAGS", f"--{xla_cpu.OPTION}=+reduce --{xla_cpu.OPT_LEVEL_OPTION}=3")
  assert xla_cpu.compiler_options("cpu") is None


def test_jit_hands_its_options_to_the_compiler(monkeypatch):
  # An option value no jaxlib accepts: compiling must fail if (and only if) it is passed.
  monkeypatch.setattr(xla_cpu, "compiler_options",
                      lambda backend=None, compute_dtype=None:
                      {xla_cpu.OPTION: "LIBRARY_FUSION_TYPE_NONSENSE"})
  with pytest.raises(Exception, match="NONSENSE"):
    xla_cpu.jit(lambda x: x * 2).lower(jnp.ones(3)).compile()


def test_jit_runs_dots_and_convolutions_outside_ynnpack():
  a = jax.random.normal(jax.random.PRNGKey(0), (64, 64))
  # 32 channels: XLA's defaults hand this convolution (and the dot) to YNNPACK.
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 8, 8, 32))
  w = jax.random.normal(jax.random.PRNGKey(2), (3, 3, 32, 32))

  def fn(a, x, w):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # Transcendentals and elementwise code XLA emits itself (optimisation level 1).
    return jnp.tanh(a @ a), jnp.sum(y, axis=(1, 2)), jax.nn.softplus(jnp.sin(3 * a)) * jnp.exp(-a)

  jitted = xla_cpu.jit(fn)
  if jax.default_backend() == "cpu":
    default = "\n".join(_ynn_fusions(jax.jit(fn).lower(a, x, w).compile().as_text()))
    if " dot(" not in default or " convolution(" not in default:
      pytest.skip("this XLA build does not hand these to YNNPACK: nothing to choose")
    text = jitted.lower(a, x, w).compile().as_text()
    for body in _ynn_fusions(text):
      assert " dot(" not in body and " convolution(" not in body, body
  ours, plain = jitted(a, x, w), jax.jit(fn)(a, x, w)
  for o, p in zip(ours, plain):
    np.testing.assert_allclose(o, p, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(p))))


def test_jit_as_decorator_with_static_args():
  @xla_cpu.jit(static_argnames=("power",))
  def f(x, power):
    return x ** power

  assert f.__name__ == "f"
  np.testing.assert_allclose(f(jnp.arange(4.0), power=3), np.arange(4.0) ** 3)
  compiled = f.lower(jnp.arange(4.0), power=2).compile()
  np.testing.assert_allclose(compiled(jnp.arange(4.0)), np.arange(4.0) ** 2)


@pytest.mark.parametrize("trace_test", ["jax", "probe"])   # the pinned jax's test, the fallback
def test_jit_inside_another_trace(trace_test, monkeypatch):
  # jax takes compiler options at the top level only: nested, it is a plain jit.
  if trace_test == "probe":
    monkeypatch.setattr(xla_cpu, "_trace_state_clean", None)
  else:
    assert xla_cpu._trace_state_clean is not None
  double = xla_cpu.jit(lambda x: 2 * x)
  shape = jax.eval_shape(lambda: double(jnp.ones((2, 3))))
  assert shape.shape == (2, 3)
  np.testing.assert_allclose(jax.jit(lambda x: double(x) + 1)(jnp.ones(3)), np.full(3, 3.0))
  np.testing.assert_allclose(double(jnp.ones(3)), np.full(3, 2.0))


def test_low_precision_compute_keeps_ynnpack_for_dots(monkeypatch):
  jax.devices()     # the backend starts under conftest's XLA_FLAGS (see the first test)
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert [xla_cpu.is_low_precision(d) for d in
          (jnp.bfloat16, "bfloat16", jnp.float16, jnp.float32, "float64", jnp.int8, None)] == [
              True, True, True, False, False, False, False]
  low = {xla_cpu.OPTION: xla_cpu.LOW_PRECISION_YNN_FUSIONS,
         xla_cpu.OPT_LEVEL_OPTION: xla_cpu.OPT_LEVEL}
  assert xla_cpu.compiler_options("cpu", compute_dtype="bfloat16") == low
  assert xla_cpu.compiler_options("cpu", compute_dtype=jnp.float32) == xla_cpu.compiler_options("cpu")
  assert xla_cpu.compiler_options("gpu", compute_dtype=jnp.bfloat16) is None
  monkeypatch.setenv("XLA_FLAGS", f"--{xla_cpu.OPTION}=+reduce")     # the user's choice wins
  assert xla_cpu.compiler_options("cpu", compute_dtype=jnp.bfloat16) == {
      xla_cpu.OPT_LEVEL_OPTION: xla_cpu.OPT_LEVEL}


@dataclasses.dataclass(frozen=True)
class _Model:
  dtype: object


def test_jit_picks_options_by_a_static_arguments_dtype():
  @xla_cpu.jit(static_argnames=("model",), compute_dtype_of="model")
  def f(model, a):
    a = a.astype(model.dtype)
    return jnp.dot(a, a, preferred_element_type=jnp.float32)

  a = jax.random.normal(jax.random.PRNGKey(0), (64, 64))
  for model, ynn_dot in ((_Model(jnp.bfloat16), True), (_Model(jnp.float32), False)):
    np.testing.assert_allclose(f(model, a), jax.jit(f.__wrapped__, static_argnums=0)(model, a),
                               rtol=1e-5, atol=1e-4)
    if jax.default_backend() == "cpu":
      text = f.lower(model, a).compile().as_text()
      assert any(" dot(" in body for body in _ynn_fusions(text)) == ynn_dot, model
  fixed = xla_cpu.jit(lambda a: jnp.dot(a, a, preferred_element_type=jnp.float32),
                      compute_dtype=jnp.bfloat16)
  if jax.default_backend() == "cpu":
    text = fixed.lower(a.astype(jnp.bfloat16)).compile().as_text()
    assert any(" dot(" in body for body in _ynn_fusions(text))
