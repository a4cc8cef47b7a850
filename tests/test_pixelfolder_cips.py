"""PixelFolder and CIPS-skip against the official implementations' structure and counts."""

import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_synth import cost
from gen_synth import generate
from gen_synth import sampling
from gen_synth import summary
from gen_synth.models import cips
from gen_synth.models import conv_layers
from gen_synth.models import coords
from gen_synth.models import pixelfolder
from tests import helpers

# Official counts, from running BlingHe/PixelFolder's PixelFolder and CIPSskip
# at 256 (../shared/reference/official_architecture_facts.md).
PIXELFOLDER_OFFICIAL_PARAMS = 20_843_614
CIPS_OFFICIAL_PARAMS = 44_317_092
MAPPING_PARAMS = 2_101_248
# Stage 0's PosFold builds a conv_merge (1024 -> 512, 1x1, + bias) that its
# forward never runs; gen_synth leaves it out, so its PixelFolder count is
# exactly this much lower than the official one.
PIXELFOLDER_UNUSED_MERGE = 1024 * 512 + 512
# PyTorch FLOP counter (matmul and convolution calls only), batch 1.
PIXELFOLDER_OFFICIAL_MACS = 23.75e9
CIPS_OFFICIAL_MACS = 222.92e9


def _abstract(config_name, arg):
  model = sampling.build_model(helpers.load_config(config_name, arg))
  return model, jax.eval_shape(lambda: sampling.init_variables(model))


# --- pixel folding ----------------------------------------------------------

def test_fold_unfold_are_exact_inverses():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 12, 5))
  y = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 6, 20))
  assert pixelfolder.fold(x).shape == (2, 4, 6, 20)
  assert pixelfolder.unfold(y).shape == (2, 8, 12, 5)
  np.testing.assert_array_equal(pixelfolder.unfold(pixelfolder.fold(x)), x)
  np.testing.assert_array_equal(pixelfolder.fold(pixelfolder.unfold(y)), y)


def test_fold_uses_the_official_channel_order():
  """Pixel (2i + a, 2j + b), channel c -> (i, j), channel (2a + b) C + c (official `Fold`)."""
  b, h, w, c = 1, 4, 6, 3
  x = np.arange(b * h * w * c, dtype=np.float32).reshape(b, h, w, c)
  y = np.asarray(pixelfolder.fold(jnp.asarray(x)))
  for i in range(h // 2):
    for j in range(w // 2):
      for a in range(2):
        for bb in range(2):
          for ch in range(c):
            assert y[0, i, j, (2 * a + bb) * c + ch] == x[0, 2 * i + a, 2 * j + bb, ch]
  # Not pixel_unshuffle's order (channel c * 4 + 2a + b).
  assert y[0, 0, 0, 1] == x[0, 0, 0, 1] and y[0, 0, 0, 1] != x[0, 0, 1, 0]


# --- parameter counts ---------------------------------------------------------

def test_pixelfolder_param_count_equals_official():
  model, variables = _abstract("pixelfolder_ffhq.py", "res=256")
  params = variables["params"]
  counts = {k: summary.count(v) for k, v in params.items()}
  assert summary.count(params) == PIXELFOLDER_OFFICIAL_PARAMS - PIXELFOLDER_UNUSED_MERGE
  assert counts["mapping"] == MAPPING_PARAMS
  assert model.num_ws == 13
  assert model.stage_resolutions() == [(4, 16), (16, 64), (64, 256)]
  # The left-out layer: stage 0 has none, the later stages' merges are that size.
  assert "posfold_merge" not in params["stage0"]
  assert summary.count(params["stage1"]["posfold_merge"]) == PIXELFOLDER_UNUSED_MERGE
  assert counts["const"] == 16 * 16 * 512
  assert counts["lff0"] == counts["lff1"] == 3 * 512 and counts["lff2"] == 3 * 128
  # Official StyledConv(in, out, 3): affine 512 in + in, weight 9 in out, noise 1, bias out.
  styled = lambda i, o: 512 * i + i + 9 * i * o + 1 + o
  assert summary.count(params["stage2"]["conv3"]) == styled(32, 128)
  assert not jax.tree.leaves(variables.get("fixed", {}))


def test_cips_param_count_equals_official():
  model, variables = _abstract("cips_ffhq.py", "res=256")
  params = variables["params"]
  assert summary.count(params) == CIPS_OFFICIAL_PARAMS
  assert summary.count(params["mapping"]) == MAPPING_PARAMS
  assert summary.count(params["emb"]) == 256 * 256 * 512
  assert summary.count(params["conv1"]) == 512 * 1024 + 1024 + 1024 * 512 + 1 + 512
  assert model.num_ws == 1 and model.num_blocks == 7


# --- cost -------------------------------------------------------------------------

def test_fir_upsampling_is_counted_as_a_convolution():
  x = jax.ShapeDtypeStruct((1, 128, 128, 3), jnp.float32)
  assert cost.cost(conv_layers.upsample_2x, x)["macs"] == 3 * 256 * 256 * 16


def test_pixelfolder_summary_cli_and_macs():
  """`macs` counts dot_general and convolution ops: the modulated and 1x1 convs, the
  LFF and affine/mapping matmuls, the demodulation coefficients' [B, I] x [I, O]
  dots, and the FIR skip upsampling (5 depthwise 4x4 convs, 4.19 M MACs), as
  PyTorch's counter counts upfirdn2d's conv2d call. Total 23.747 G vs 23.75 G."""
  out = subprocess.run(
      [sys.executable, "-m", "gen_synth.summary",
       "--config=configs/pixelfolder_ffhq.py:res=256"],
      cwd=helpers.CONFIG_DIR.parent, capture_output=True, text=True, check=True,
      timeout=600)
  result = json.loads(out.stdout)
  assert result["params"] == PIXELFOLDER_OFFICIAL_PARAMS - PIXELFOLDER_UNUSED_MERGE
  assert result["params_mapping"] == MAPPING_PARAMS
  assert abs(result["macs"] / PIXELFOLDER_OFFICIAL_MACS - 1) < 0.01, result["macs"]


def test_cips_macs_match_official_flop_counter():
  """Dot/conv only: the 1x1 modulated convs (as einsums), LFF, affines, mapping and
  demodulation dots; the bilinear embedding lookup is gathers (not counted, as
  grid_sample is not counted by PyTorch's counter)."""
  out = summary.summarize(helpers.load_config("cips_ffhq.py", "res=256"))
  assert out["params"] == CIPS_OFFICIAL_PARAMS
  assert abs(out["macs"] / CIPS_OFFICIAL_MACS - 1) < 0.01, out["macs"]


# --- layers -------------------------------------------------------------------------

@pytest.mark.parametrize("k,demodulate", [(3, True), (1, True), (3, False)])
def test_modulated_conv_equals_per_sample_weight_conv(k, demodulate):
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 7, 5))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 8))
  layer = conv_layers.ModulatedConv2d(4, k, demodulate=demodulate)
  variables = layer.init(jax.random.PRNGKey(2), x, w)
  y = layer.apply(variables, x, w)
  p = variables["params"]
  styles = w @ (p["affine"]["kernel"] / np.sqrt(8)) + p["affine"]["bias"]
  weight = p["kernel"] / np.sqrt(5 * k * k)
  for b in range(3):   # one explicit weight per sample, one plain conv each
    wb = weight * styles[b][None, None, :, None]
    if demodulate:
      wb = wb / jnp.sqrt(jnp.sum(wb ** 2, axis=(0, 1, 2)) + 1e-8)
    yb = jax.lax.conv_general_dilated(x[b:b + 1], wb, (1, 1), [(k // 2, k // 2)] * 2,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(y[b:b + 1], yb, rtol=1e-4, atol=1e-5)
  grouped = conv_layers.ModulatedConv2d(4, k, demodulate=demodulate, grouped=True)
  np.testing.assert_allclose(grouped.apply(variables, x, w), y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_demodulation_coefficients_sum_every_tap(k):
  weight = jax.random.normal(jax.random.PRNGKey(0), (k, k, 6, 4))
  styles = jax.random.normal(jax.random.PRNGKey(1), (3, 6))
  wb = np.asarray(weight, np.float64)[None] * np.asarray(styles, np.float64)[:, None, None, :, None]
  expected = 1 / np.sqrt(np.sum(wb ** 2, axis=(1, 2, 3)) + 1e-8)          # [B, O]
  d = conv_layers.demodulation_coefficients(weight, styles)
  np.testing.assert_allclose(d, expected, rtol=2e-6)
  # The taps are added as [I, O] slices: no reduction over the kernel's two
  # leading axes, which XLA:CPU's YNNPACK runs ~50x slower (see the docstring).
  hlo = jax.jit(conv_layers.demodulation_coefficients).lower(weight, styles).as_text()
  assert "dimensions = [0, 1]" not in hlo and "reduce" not in hlo.replace("reduce_precision", "")


def _upfirdn_numpy(x, k1d, up, down, pad0, pad1, gain):
  """Literal upfirdn on one [H, W] plane: zero-insert, pad, convolve, keep every `down`-th."""
  k = np.outer(k1d, k1d).astype(np.float64)
  k = k / k.sum() * gain
  h, w = x.shape
  u = np.zeros((h * up, w * up))
  u[::up, ::up] = x
  u = np.pad(u, ((pad0, pad1), (pad0, pad1)))
  kh = k.shape[0]
  out = np.zeros((u.shape[0] - kh + 1, u.shape[1] - kh + 1))
  for i in range(out.shape[0]):
    for j in range(out.shape[1]):
      out[i, j] = np.sum(u[i:i + kh, j:j + kh] * k[::-1, ::-1])
  return out[::down, ::down]


def test_fir_filter_matches_upfirdn():
  x = np.random.RandomState(0).randn(1, 5, 6, 2).astype(np.float32)
  up = conv_layers.upsample_2x(jnp.asarray(x))
  down = conv_layers.downsample_2x(jnp.asarray(x[:, :4]))
  assert up.shape == (1, 10, 12, 2) and down.shape == (1, 2, 3, 2)
  for c in range(2):
    np.testing.assert_allclose(up[0, :, :, c], _upfirdn_numpy(x[0, :, :, c], [1, 3, 3, 1], 2, 1, 2, 1, 4),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(down[0, :, :, c],
                               _upfirdn_numpy(x[0, :4, :, c], [1, 3, 3, 1], 1, 2, 1, 1, 1),
                               rtol=1e-5, atol=1e-5)
  # The D's downsampling conv: blur then a stride-2 'valid' 3x3 conv.
  conv = conv_layers.EqualConv2d(4, 3, down=2)
  v = conv.init(jax.random.PRNGKey(0), jnp.asarray(x[:, :4]))
  assert conv.apply(v, jnp.asarray(x[:, :4])).shape == (1, 2, 3, 4)


# --- the generators ---------------------------------------------------------------

@pytest.fixture(scope="module", params=["pixelfolder_ffhq.py", "cips_ffhq.py"])
def tiny(request):
  config = helpers.load_config(request.param, "tiny")
  model = sampling.build_model(config)
  variables = sampling.init_variables(model, seed=1)
  return model, variables


def test_tiny_models_jit_and_are_finite(tiny):
  model, variables = tiny
  z = jnp.asarray(sampling.seed_latents([0, 1], model.z_dim))
  fn = jax.jit(lambda v, z, key: model.apply(v, z, rngs={"noise": key}))
  out = fn(variables, z, jax.random.PRNGKey(0))
  r = model.resolution
  assert out.shape == (2, r, r, 3) and out.dtype == jnp.float32
  assert np.all(np.isfinite(out))
  # noise_mode='random' without a 'noise' rng: a clear one-line error.
  with pytest.raises(ValueError, match="needs a 'noise' rng"):
    model.apply(variables, z)
  # Noise is drawn fresh per key once its weights are nonzero.
  noisy = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 1.0 if "noise" in jax.tree_util.keystr(path) else x, variables)
  a = fn(noisy, z, jax.random.PRNGKey(0))
  b = fn(noisy, z, jax.random.PRNGKey(1))
  assert not np.allclose(a, b)
  # Rendering switches noise off and is deterministic.
  ws = sampling.map_latents(model, variables, z)
  img = sampling.render(model, noisy, ws, r, r)
  np.testing.assert_array_equal(img, sampling.render(model, noisy, ws, r, r))


def test_pixelfolder_computes_its_sample_independent_inputs_once_per_batch():
  """The Fourier features and the PosFold convolutions before the folds are
  the same for every sample: one batch-3 call equals three batch-1 calls, and
  no sine of the optimised program, fused or not, runs over the batch (when
  the features were broadcast to the batch first, XLA:CPU fused their sines
  into the broadcast and evaluated them once per sample)."""
  config = helpers.load_config("pixelfolder_ffhq.py", "tiny")
  config.model.resolution = 64                    # two stages: a merge with the previous one
  model = sampling.deterministic(sampling.build_model(config))
  variables = sampling.init_variables(model)
  z = jax.random.normal(jax.random.PRNGKey(0), (3, model.z_dim))
  fn = jax.jit(lambda v, z: model.apply(v, z, height=64, width=64))
  batch = fn(variables, z)
  for i in range(3):
    np.testing.assert_allclose(batch[i:i + 1], fn(variables, z[i:i + 1]), rtol=1e-5, atol=1e-5)
  hlo = fn.lower(variables, z).compile().as_text()
  bodies = dict(re.findall(r"^(%[\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo, re.M | re.S))
  with_sine = {name for name, body in bodies.items() if " sine(" in body}
  outputs = re.findall(r"= f32\[([0-9,]*)\]\S* (?:sine\(|fusion\([^\n]*calls=(%[\w.\-]+))", hlo)
  sine_shapes = [shape for shape, called in outputs if not called or called in with_sine]
  assert len(sine_shapes) >= 2, sine_shapes                     # one LFF per stage at least
  assert not [shape for shape in sine_shapes if shape.startswith("3,")], sine_shapes


def test_pixelfolder_other_sizes_fail_in_one_line():
  config = helpers.load_config("pixelfolder_ffhq.py", "tiny")
  model = sampling.build_model(config)
  variables = sampling.init_variables(model)
  ws = sampling.map_latents(model, variables, sampling.seed_latents([0], model.z_dim))
  with pytest.raises(ValueError, match=r"can only produce 32x32 images") as e:
    sampling.render(model, variables, ws, 48, 32)
  assert "\n" not in str(e.value) and "48x32" in str(e.value)


def test_pixelfolder_refuses_tiling(tmp_path):
  config = helpers.load_config("pixelfolder_ffhq.py", "tiny")
  model = sampling.build_model(config)
  variables = sampling.init_variables(model)
  with pytest.raises(sampling.CannotTileError) as e:
    generate.generate(model, variables, [0], str(tmp_path), 32, 32, tile=16)
  msg = str(e.value)
  assert "\n" not in msg and "not pixel-independent" in msg and "pixel folds" in msg
  # Without --tile it renders.
  assert len(generate.generate(model, variables, [0], str(tmp_path), 32, 32)) == 1


def test_cips_tiles_equal_crops_and_other_sizes_work():
  config = helpers.load_config("cips_ffhq.py", "tiny")
  model = sampling.build_model(config)
  variables = sampling.init_variables(model, seed=3)
  ws = sampling.map_latents(model, variables, sampling.seed_latents([0, 1], model.z_dim))
  whole = sampling.render(model, variables, ws, 32, 32)
  tiled = sampling.render(model, variables, ws, 32, 32, tile=12)
  np.testing.assert_allclose(tiled, whole, atol=1e-5)   # GEMM shapes differ per tile
  # A 2R-1 linspace grid contains the R grid (bit-identical coordinates) at its
  # even indices, so a pixel-independent model gives the same pixels there.
  fine = sampling.render(model, variables, ws, 63, 63)
  np.testing.assert_allclose(fine[:, ::2, ::2], whole, atol=1e-5)
  other = sampling.render(model, variables, ws, 24, 40, tile=16)
  assert other.shape == (2, 24, 40, 3) and np.all(np.isfinite(other))


def test_cips_embedding_sampling():
  table = jax.random.normal(jax.random.PRNGKey(0), (8, 8, 3))
  lin = coords.axis_coords(8, "linspace", -1.0, 1.0)
  ctr = coords.axis_coords(8, "center", -1.0, 1.0)
  # align_corners=True: the linspace(-1, 1, R) grid returns the constant exactly.
  np.testing.assert_array_equal(cips.sample_embedding(table, lin, lin, True), table)
  # align_corners=False (grid_sample's default): texel centres are (2i + 1) / R - 1.
  np.testing.assert_allclose(cips.sample_embedding(table, ctr, ctr, False), table, atol=1e-6)
  # Half-way between two texels: their mean; beyond the border: the border texel.
  mid = jnp.asarray([(lin[2] + lin[3]) / 2])
  np.testing.assert_allclose(cips.sample_embedding(table, mid, lin[:1], True)[0, 0],
                             (table[2, 0] + table[3, 0]) / 2, atol=1e-6)
  out = jnp.asarray([-1.5, 1.5])
  np.testing.assert_allclose(cips.sample_embedding(table, out, out, False),
                             table[np.ix_([0, 7], [0, 7])], atol=1e-6)
