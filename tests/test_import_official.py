"""gen_synth.import_official against files written and images rendered by the official code.

The fixtures in tests/fixtures/official were made by
experiments/official_parity/make_import_fixtures.py from the official
repositories (VinAIResearch/CREPS, BlingHe/PixelFolder) with torch; this test
needs neither. Each case is an official G, G_ema and D at reduced widths with
every tensor perturbed (biases, affine biases, w_avg, noise strengths), in its
official file format, plus the official renders of fixed latents.

Tolerance: 1e-4 max abs on images of magnitude ~1-3 (the issue's bar). The
measured difference is ~1e-5 (float32 summation order: PyTorch's einsum / conv
vs XLA's); a wrong layout, gain or missing bias moves pixels by > 1e-2.
"""

import json
import os
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gen_synth import checkpointing
from gen_synth import import_official
from gen_synth import sampling
from gen_synth import train
from gen_synth.models import discriminator as discriminator_lib
from gen_synth.official import name_tables
from gen_synth.official import safe_pickle

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "official")
IMAGE_ATOL = 1e-4
LOGIT_RTOL = 1e-5          # relative to the largest |logit| of the batch
CASES = {                  # case -> (file, model)
    "creps32": ("creps32.pkl", "creps"),
    "creps32_clamp": ("creps32_clamp.pkl", "creps"),
    "pixelfolder64": ("pixelfolder64.pt", "pixelfolder"),
    "cips16": ("cips16.pt", "cips"),
}


def _reference(case):
  return dict(np.load(os.path.join(FIXTURES, f"{case}.npz")))


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """case -> (workdir, config, official networks) for every fixture, imported once."""
  out = {}
  for case, (name, model) in CASES.items():
    workdir = str(tmp_path_factory.mktemp(case))
    config = import_official.import_checkpoint(os.path.join(FIXTURES, name), workdir, model,
                                               w_avg_samples=256)
    out[case] = (workdir, config, import_official.read_official(os.path.join(FIXTURES, name)))
  return out


def _render(config, variables, z, psi, w_avg=None, **kw):
  config = config.copy_and_resolve_references()
  if "noise_mode" in config.model:
    config.model.noise_mode = "none"       # the official renders ran with noise off
  model = sampling.build_model(config)
  if w_avg is not None:
    variables = dict(variables, stats={"mapping": {"w_avg": jnp.asarray(w_avg)}})
  fn = jax.jit(lambda v, z: model.apply(v, z, truncation_psi=psi, **kw))
  return np.asarray(fn(variables, jnp.asarray(z)))


@pytest.mark.parametrize("case", sorted(CASES))
def test_imported_g_ema_renders_the_official_images(imported, case):
  workdir, config, _ = imported[case]
  ref = _reference(case)
  _, variables, loaded_config, step = sampling.load_generator(workdir)
  assert step == 0
  assert json.loads(loaded_config.model.to_json()) == json.loads(config.model.to_json())
  # PixelFolder / CIPS files hold no w_avg: compare truncation with the official mean latent.
  w_avg = None if config.model.name == "creps" else ref["truncation_latent"]
  for psi, key in ((1.0, "images_psi1"), (0.7, "images_psi07")):
    got = _render(config, variables, ref["z"], psi, w_avg)
    assert got.shape == ref[key].shape
    err = np.abs(got - ref[key]).max()
    assert err <= IMAGE_ATOL, (case, key, err)
  if config.model.name == "creps":
    np.testing.assert_array_equal(variables["stats"]["mapping"]["w_avg"], ref["truncation_latent"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_imported_g_and_d_match_the_official_networks(imported, case):
  workdir, config, _ = imported[case]
  ref = _reference(case)
  generator, discriminator = train.build_models(config)
  manager = checkpointing.checkpoint_manager(workdir, max_to_keep=None)
  init = lambda k: train.train_steps.init_state(
      generator, discriminator, *train.train_steps.make_optimizers(config.train), k,
      config.discriminator.resolution)
  abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
  gen, state, _ = checkpointing.restore_all(manager, *train._split_for_checkpoint(abstract))  # pylint: disable=protected-access
  variables = dict(gen, params=state["g_params"])
  w_avg = None if config.model.name == "creps" else ref["truncation_latent"]
  err = np.abs(_render(config, variables, ref["z"], 1.0, w_avg) - ref["images_g"]).max()
  assert err <= IMAGE_ATOL, (case, "G", err)
  d = discriminator_lib.build_discriminator(config.discriminator)
  x = jnp.asarray(ref["d_images"])
  d_apply = jax.jit(d.apply)
  apply = lambda imgs: np.asarray(d_apply({"params": state["d_params"]}, imgs))
  for got, key in ((np.concatenate([apply(x[:4]), apply(x[4:])]), "d_logits_b4"),
                   (apply(x), "d_logits_b8")):          # mbstd groups of 4 within a batch of 8
    scale = np.abs(ref[key]).max()
    assert np.abs(got - ref[key]).max() <= LOGIT_RTOL * scale + 1e-6, (case, key)


def test_creps_any_size_equals_official_gen_images_scale(imported):
  """gen_images.py --scale=1.5 (the coordinate buffer replaced) == gen_synth at 1.5 R."""
  for case in ("creps32", "creps32_clamp"):
    workdir, config, _ = imported[case]
    ref = _reference(case)
    _, variables, _, _ = sampling.load_generator(workdir)
    size = ref["images_scale"].shape[1]
    got = _render(config, variables, ref["z"], 1.0, height=size, width=size)
    assert np.abs(got - ref["images_scale"]).max() <= IMAGE_ATOL


def test_cips_training_mode_constant_matches_align_corners(imported):
  """Official training mode uses the constant itself: gen_synth's emb_align_corners=True."""
  workdir, config, _ = imported["cips16"]
  ref = _reference("cips16")
  assert config.model.emb_align_corners is False          # the official eval mode (default)
  _, variables, _, _ = sampling.load_generator(workdir)
  config = config.copy_and_resolve_references()
  config.model.emb_align_corners = True
  got = _render(config, variables, ref["z"], 1.0, ref["truncation_latent"])
  assert np.abs(got - ref["images_train_mode"]).max() <= IMAGE_ATOL


def test_clamp_case_is_in_the_clamp_regime():
  assert _reference("creps32_clamp")["act_max"] >= 256.0
  assert _reference("creps32")["act_max"] < 64.0


def test_architecture_is_read_from_the_file(imported):
  _, config, nets = imported["creps32"]
  m = config.model
  assert (m.resolution, m.z_dim, m.w_dim, m.mapping_layers) == (32, 32, 32, 8)
  assert (m.channel_base, m.channel_max, m.biline_channels, m.rank) == (1024, 64, 16, 8)
  assert tuple(m.decoder_widths) == (32, 64, 32, 16) and tuple(m.refine_channels) == (64, 32)
  assert nets.g_kwargs["channel_base"] == 1024
  d = config.discriminator
  assert (d.channel_base, d.channel_max, d.conv_clamp, d.mbstd_group_size) == (512, 32, 256.0, 4)
  _, config, _ = imported["pixelfolder64"]
  assert (config.model.resolution, config.model.channel_base, config.model.channel_max) == (
      64, 512, 32)
  assert config.discriminator.conv_clamp is None and config.train.r1_gamma == 10.0
  _, config, _ = imported["cips16"]
  assert (config.model.resolution, config.model.hidden_size) == (16, 16)
  assert config.imported_from.format == "torch_zip"


def test_leftover_tensors_are_exactly_the_never_run_ones(imported):
  """The tables' unused lists: CREPS b4.tores + decoder_8; PixelFolder stage 0 conv_merge."""
  _, config, nets = imported["creps32"]
  table = import_official.generator_table(config)
  assert sorted(table.unused) == sorted(
      [f"synthesis.b4.tores.{p}" for p in ("weight", "bias", "affine.weight", "affine.bias")]
      + [f"synthesis.decoder_8.{i}.{p}" for i in range(4) for p in ("weight", "bias")])
  # the counts at the official widths are in the facts sheet: 578,880 (CREPS), 524,800 (PF);
  # here the formula at the fixture widths: tores 64*16 + 16 + 32*64 + 64, decoder_8 16->32->64->32->16.
  assert table.unused_count(nets.g_ema) == (64 * 16 + 16 + 32 * 64 + 64) + (
      16 * 32 + 32 + 32 * 64 + 64 + 64 * 32 + 32 + 32 * 16 + 16)
  _, config, nets = imported["pixelfolder64"]
  table = import_official.generator_table(config)
  assert table.unused == ("posfolders.0.conv_merge.0.weight", "posfolders.0.conv_merge.1.bias")
  assert table.unused_count(nets.g_ema) == 32 * 64 + 32


def test_table_refuses_a_file_that_does_not_match(imported):
  _, config, nets = imported["creps32"]
  table = import_official.generator_table(config)
  model = sampling.build_model(config)
  template = jax.eval_shape(lambda: sampling.init_variables(model, 0))
  sd = dict(nets.g_ema)
  sd["synthesis.b8.fc0.weight"] = sd["synthesis.b8.fc0.weight"][:, :-1]     # wrong shape
  sd["synthesis.extra.weight"] = np.zeros(3)                                # unknown tensor
  del sd["synthesis.decoder_img.bias"]                                      # missing tensor
  with pytest.raises(name_tables.TableMismatchError) as e:
    name_tables.apply_table(table, sd, template)
  msg = str(e.value)
  assert "b8.fc0.weight" in msg and "synthesis.extra.weight" in msg and "decoder_img.bias" in msg
  ok = name_tables.apply_table(table, nets.g_ema, template)
  flat = name_tables.flatten_template(ok)
  assert flat == name_tables.flatten_template(template)      # every leaf filled, same shapes


def test_malicious_pickle_is_refused_before_anything_runs(tmp_path):
  marker = tmp_path / "pwned"

  class Evil:
    def __reduce__(self):
      return (os.system, (f"touch {marker}",))

  path = tmp_path / "evil.pkl"
  path.write_bytes(pickle.dumps({"G_ema": Evil()}))
  with pytest.raises(safe_pickle.UnsafePickleError, match="system"):
    import_official.read_official(str(path))
  assert not marker.exists()
  # and the CLI says so in one line
  proc = subprocess.run(
      [sys.executable, "-m", "gen_synth.import_official", f"--source={path}",
       f"--workdir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith("error:") and "system" in proc.stderr
  assert not marker.exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_cli_import_then_generate(tmp_path):
  workdir = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "gen_synth.import_official",
       f"--source={os.path.join(FIXTURES, 'creps32.pkl')}", f"--workdir={workdir}"],
      capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "imported g_ema,g,d of a creps 32x32 model" in proc.stdout
  config = json.loads((workdir / "config.json").read_text())
  assert config["imported_from"]["model"] == "creps"
  proc = subprocess.run(
      [sys.executable, "-m", "gen_synth.generate", f"--workdir={workdir}", "--seeds=0-1",
       "--height=40", "--width=56", f"--outdir={tmp_path / 'out'}"],
      capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert sorted(os.listdir(tmp_path / "out")) == ["seed0000.png", "seed0001.png"]
  # importing twice into the same run directory is refused
  proc = subprocess.run(
      [sys.executable, "-m", "gen_synth.import_official",
       f"--source={os.path.join(FIXTURES, 'creps32.pkl')}", f"--workdir={workdir}"],
      capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode != 0 and "already holds a checkpoint" in proc.stderr


FULL = os.environ.get("GEN_SYNTH_OFFICIAL_FIXTURES")


@pytest.mark.skipif(not FULL or not os.path.exists(os.path.join(FULL or "", "creps256_full.pkl")),
                    reason="set GEN_SYNTH_OFFICIAL_FIXTURES to a folder with creps256_full.pkl "
                           "(make_import_fixtures.py --full_size; ~360 MB, kept out of git)")
def test_full_size_creps256(tmp_path):
  config = import_official.import_checkpoint(os.path.join(FULL, "creps256_full.pkl"),
                                             str(tmp_path / "run"))
  ref = dict(np.load(os.path.join(FULL, "creps256_full.npz")))
  _, variables, _, _ = sampling.load_generator(str(tmp_path / "run"))
  assert (config.model.channel_base, config.model.channel_max) == (65536, 1024)
  nets = import_official.read_official(os.path.join(FULL, "creps256_full.pkl"))
  # built but never run at the official widths (the facts sheet's count)
  assert import_official.generator_table(config).unused_count(nets.g_ema) == 578_880
  got = _render(config, variables, ref["z"][:1], 1.0)
  assert np.abs(got - ref["images_psi1"][:1]).max() <= IMAGE_ATOL


def test_training_starts_from_an_imported_run(imported):
  """config.init_from=<imported run> (the FFHQ -> MetFaces fine-tune path) loads G, G_ema, D, w_avg."""
  workdir, config, _ = imported["creps32"]
  generator, discriminator = train.build_models(config)
  g_tx, d_tx = train.train_steps.make_optimizers(config.train)
  init = lambda k: train.train_steps.init_state(generator, discriminator, g_tx, d_tx, k,
                                                config.discriminator.resolution)
  fresh = jax.jit(init)(jax.random.PRNGKey(1))
  abstract_gen, abstract_train = train._split_for_checkpoint(jax.eval_shape(init, jax.random.PRNGKey(1)))  # pylint: disable=protected-access
  state, _, fresh_paths = train._transfer_from(workdir, fresh, abstract_gen, abstract_train)  # pylint: disable=protected-access
  assert fresh_paths == []                                 # same model: everything copied
  _, variables, _, _ = sampling.load_generator(workdir)
  same = lambda a, b: all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), a, b)))
  assert same(state.g_ema_params, variables["params"]) and same(state.stats, variables["stats"])
  assert not same(state.g_params, fresh.g_params) and not same(state.d_params, fresh.d_params)
  assert not same(state.g_params, state.g_ema_params)       # G and G_ema differ in the file


@pytest.mark.parametrize("case", ["creps_d64", "creps_d128", "creps_d256"])
def test_official_discriminator_alone(case):
  """The official StyleGAN2 D (as CREPS trains it) at 64-256, batch 4 and 8; d128 is in the clamps."""
  loaded = safe_pickle.load(os.path.join(FIXTURES, f"{case}.pkl"))
  record = loaded.contents["D"]
  ref = _reference(case)
  res = ref["d_pixels"].shape[1]
  nets = import_official.OfficialNetworks(
      model="creps", format=loaded.format, g_ema={}, d=safe_pickle.module_state_dict(record),
      d_kwargs=safe_pickle.init_kwargs(record))
  config = ml_collections.ConfigDict({"discriminator": import_official.d_config(nets, res)})
  d = discriminator_lib.build_discriminator(config.discriminator)
  template = jax.eval_shape(lambda: d.init(jax.random.PRNGKey(0), jnp.zeros((4, res, res, 3))))
  params = name_tables.apply_table(import_official.discriminator_table(config, "creps"),
                                   nets.d, template)["params"]
  x = jnp.asarray(ref["d_pixels"], jnp.float32) / 127.5 - 1
  apply = jax.jit(lambda imgs: d.apply({"params": params}, imgs))
  assert (float(ref["act_max"]) >= 256.0) == (case == "creps_d128")
  for got, key in ((np.concatenate([apply(x[:4]), apply(x[4:])]), "d_logits_b4"),
                   (np.asarray(apply(x)), "d_logits_b8")):
    scale = np.abs(ref[key]).max()
    assert np.abs(got - ref[key]).max() <= LOGIT_RTOL * scale + 1e-6, (case, key)
