r"""Imports the authors' published checkpoints into a gen_synth run directory.

  python -m gen_synth.import_official --source=network-snapshot-025000.pkl --workdir=runs/creps
  python -m gen_synth.import_official --source=ffhq256.pt --workdir=runs/pixelfolder
  python -m gen_synth.import_official --source=cips_ffhq.pt --workdir=runs/cips --model=cips

  # then, as any run directory:
  python -m gen_synth.generate --workdir=runs/creps --seeds=0-7 --trunc=0.7 --outdir=out
  python -m gen_synth.main --config=configs/creps_ffhq.py:res=1024 \
      --config.init_from=runs/creps --workdir=runs/metfaces ...      # fine-tune

Formats (auto-detected; `--model` only checks the guess):
  creps        the official CREPS training-loop pickle (a StyleGAN3-style persistence
               pickle holding G, D, G_ema; a pickle with only G_ema works too)
  pixelfolder  `torch.save` of the PixelFolder train.py checkpoint dict {g, d, g_ema, ...}
  cips         the same for CIPS-skip (saic-mdal/CIPS or BlingHe/PixelFolder)

No code from the file runs, and neither torch nor the official packages are
imported: gen_synth.official.safe_pickle reads tensors and plain containers
only. The architecture (resolution, channel base / max, mapping layers, z / w
dims, bi-line width, ...) is read from the file - the tensors' shapes, checked
against the constructor arguments the CREPS pickle records - never assumed.
The name-mapping tables (gen_synth.official.*_table) then fill every gen_synth
variable exactly once and refuse any tensor they do not know.

The run directory holds config.json and checkpoint step 0: G_ema (what
`generate` / `evaluate` / the any-scale tools render), and the training
state `main` resumes or transfers from (`config.init_from`): G, D and w_avg
where the file holds them (otherwise G = G_ema, and a freshly initialised D
with a warning), a fresh Adam state and path-length mean. The official Adam
moments are not imported. w_avg: CREPS stores it (G_ema's is used); the
rosinality-style PixelFolder / CIPS files hold none, so it is computed as
their sampling code does, the mean of the mapped w over 4,096 random z
(`--w_avg_samples`, seed 0).
"""

import dataclasses
import hashlib
import os
import pickle
import re
from typing import Dict, Optional

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gen_synth import checkpointing
from gen_synth import cli
from gen_synth import config_utils
from gen_synth import sampling
from gen_synth import train_steps
from gen_synth.models import discriminator as discriminator_lib
from gen_synth.official import creps_table
from gen_synth.official import discriminator_tables
from gen_synth.official import name_tables
from gen_synth.official import pixelfolder_table
from gen_synth.official import safe_pickle

MODELS = ("creps", "pixelfolder", "cips")


class OfficialFormatError(ValueError):
  """The file is not an official checkpoint gen_synth can import (one-line CLI error)."""


@dataclasses.dataclass
class OfficialNetworks:
  """The state dicts and recorded arguments of one official file."""
  model: str                                  # creps | pixelfolder | cips
  format: str                                 # safe_pickle format name
  g_ema: Dict[str, np.ndarray]
  g: Optional[Dict[str, np.ndarray]] = None
  d: Optional[Dict[str, np.ndarray]] = None
  g_kwargs: dict = dataclasses.field(default_factory=dict)
  d_kwargs: dict = dataclasses.field(default_factory=dict)
  args: dict = dataclasses.field(default_factory=dict)


# --- reading --------------------------------------------------------------------

def _as_dict(x):
  if isinstance(x, dict):
    return dict(x)
  return dict(vars(x)) if hasattr(x, "__dict__") else {}


def detect_model(g_ema: Dict[str, np.ndarray]) -> str:
  if "synthesis.b4.input.freqs" in g_ema:
    return "creps"
  if any(k.startswith("posfolders.") for k in g_ema):
    return "pixelfolder"
  if "emb.input" in g_ema and any(k.startswith("linears.") for k in g_ema):
    return "cips"
  raise OfficialFormatError("the generator's tensors are neither CREPS, PixelFolder nor CIPS-skip "
                     f"(first names: {sorted(g_ema)[:5]})")


def read_official(path: str, model: Optional[str] = None) -> OfficialNetworks:
  """Reads an official file (no code runs) into state dicts + recorded arguments."""
  loaded = safe_pickle.load(path)
  top = loaded.contents
  if not isinstance(top, dict):
    raise OfficialFormatError(f"{path}: expected a dict of networks at the top level, got "
                       f"{type(top).__name__}")
  if loaded.format == "persistence_pickle":
    if "G_ema" not in top:
      raise OfficialFormatError(f"{path}: a pickle without G_ema (keys: {sorted(top)})")
    sd = lambda k: safe_pickle.module_state_dict(top[k]) if top.get(k) is not None else None
    nets = OfficialNetworks(
        model="", format=loaded.format, g_ema=sd("G_ema"), g=sd("G"), d=sd("D"),
        g_kwargs=safe_pickle.init_kwargs(top["G_ema"]),
        d_kwargs=safe_pickle.init_kwargs(top["D"]) if top.get("D") is not None else {})
  else:
    if "g_ema" not in top:
      raise OfficialFormatError(f"{path}: a checkpoint without 'g_ema' (keys: {sorted(top)})")
    plain = lambda k: ({n: np.asarray(v) for n, v in top[k].items()}
                       if top.get(k) is not None else None)
    nets = OfficialNetworks(model="", format=loaded.format, g_ema=plain("g_ema"),
                            g=plain("g"), d=plain("d"), args=_as_dict(top.get("args", {})))
  nets.model = detect_model(nets.g_ema)
  if model and model != nets.model:
    raise OfficialFormatError(f"{path} holds a {nets.model} generator, not --model={model}")
  return nets


# --- the architecture, from the file ----------------------------------------------

def channel_table(widths: Dict[int, int], what: str):
  """(channel_base, channel_max) with min(base // r, max) == widths[r] for every r."""
  cmax = max(widths.values())
  below = {r: c for r, c in widths.items() if c < cmax}
  base = max(c * r for r, c in below.items()) if below else cmax * max(widths)
  if any(min(base // r, cmax) != c for r, c in widths.items()):
    raise OfficialFormatError(f"{what}: widths {dict(sorted(widths.items()))} are not "
                       "min(channel_base / r, channel_max) for any base / max")
  return base, cmax


def _count(sd, fmt, first=0):
  """How many of fmt.format(first), fmt.format(first + 1), ... are in `sd`, consecutively."""
  n = 0
  while fmt.format(first + n) in sd:
    n += 1
  return n


def _shape(sd, name, axis):
  return int(np.shape(sd[name])[axis])


def _check_kwarg(kwargs, key, value, what):
  if key in kwargs and kwargs[key] is not None and kwargs[key] != value:
    raise OfficialFormatError(f"{what}: the file records {key}={kwargs[key]!r} but its tensors "
                       f"say {value!r}")


def _model(name, resolution, sd, mapping_fmt, first) -> ml_collections.ConfigDict:
  """config.model with the fields every model shares; the mapping read from `sd`.

  mapping_fmt: the official name of mapping layer i's weight ('mapping.fc{}.weight',
  numbered from `first`).
  """
  layers = _count(sd, mapping_fmt, first)
  m = ml_collections.ConfigDict()
  m.name = name
  m.dtype = "float32"
  m.resolution = resolution
  m.z_dim = _shape(sd, mapping_fmt.format(first), 1)
  m.w_dim = _shape(sd, mapping_fmt.format(first + layers - 1), 0)
  m.mapping_layers = layers
  m.coord_convention = "linspace"
  return m


def creps_model_config(sd, kwargs) -> ml_collections.ConfigDict:
  what = "CREPS G"
  if kwargs.get("c_dim"):
    raise OfficialFormatError(
        f"{what}: conditional models (c_dim={kwargs['c_dim']}) are not supported")
  pattern = re.compile(r"synthesis\.b(\d+)\.fc1\.weight")
  blocks = sorted(int(match.group(1)) for match in map(pattern.fullmatch, sd) if match)
  resolution = blocks[-1]
  widths = {r: _shape(sd, f"synthesis.b{r}.fc1.weight", 0) for r in blocks}
  base, cmax = channel_table(widths, what)
  m = _model("creps", resolution, sd, "mapping.fc{}.weight", 0)
  m.channel_base, m.channel_max = base, cmax
  if kwargs.get("channel_base") and kwargs.get("channel_max"):
    kb, km = int(kwargs["channel_base"]), int(kwargs["channel_max"])
    if all(min(kb // r, km) == c for r, c in widths.items()):
      m.channel_base, m.channel_max = kb, km   # as the run was configured
  m.rank = _shape(sd, "synthesis.b4.input.weight", 3) // 2
  m.biline_channels = _shape(sd, "synthesis.b8.tores.weight", 0)
  m.bandwidth = 10.0          # only shapes the random init; the frequencies are loaded
  m.fc_clamp = kwargs.get("fc_clamp", 256.0)
  m.fc_clamp = None if m.fc_clamp is None else float(m.fc_clamp)
  m.refine_clamp = 256.0
  m.decoder_widths = tuple(_shape(sd, f"synthesis.decoder_last.{i}.weight", 0)
                           for i in range(4))
  m.refine_channels = (_shape(sd, "synthesis.block0.fc1.weight", 0),
                       _shape(sd, "synthesis.block1.fc1.weight", 0))
  for key in ("z_dim", "w_dim"):
    _check_kwarg(kwargs, key, m[key], what)
  _check_kwarg(kwargs, "img_resolution", resolution, what)
  _check_kwarg(kwargs.get("mapping_kwargs") or {}, "num_layers", m.mapping_layers, what)
  _check_kwarg(kwargs, "biline_channels", m.biline_channels, what)
  return m


def pixelfolder_model_config(sd, args) -> ml_collections.ConfigDict:
  what = "PixelFolder G"
  stages = _count(sd, "lffs.{}.ffm.conv.weight")
  unfolded0 = _shape(sd, "input.input", 2)
  resolution = unfolded0 * 4 ** (stages - 1)
  widths = {}
  for s in range(stages):
    folded = unfolded0 * 4 ** s // 4
    widths[folded] = _shape(sd, f"convs.{4 * s}.conv.weight", 2)
    widths[folded * 2] = _shape(sd, f"convs.{4 * s}.conv.weight", 1)
    widths[folded * 4] = _shape(sd, f"convs.{4 * s + 2}.conv.weight", 1)
  m = _model("pixelfolder", resolution, sd, "style.{}.weight", 1)   # style.0: pixel norm
  m.channel_base, m.channel_max = channel_table(widths, what)
  m.noise_mode = "random"
  _check_kwarg(args, "size", resolution, what)
  _check_kwarg(args, "latent", m.z_dim, what)
  return m


def cips_model_config(sd, args) -> ml_collections.ConfigDict:
  what = "CIPS G"
  blocks = _count(sd, "to_rgbs.{}.conv.weight")
  widths = {2 ** (i + 2): _shape(sd, f"linears.{2 * i}.conv.weight", 1) for i in range(blocks)}
  m = _model("cips", _shape(sd, "emb.input", 2), sd, "style.{}.weight", 1)
  m.hidden_size = _shape(sd, "lff.ffm.conv.weight", 0)
  m.channel_base, m.channel_max = channel_table(widths, what)
  m.emb_align_corners = False    # the official eval mode (g_ema.eval(): grid_sample default)
  m.noise_mode = "random"
  if 2 ** (blocks + 1) != m.resolution:
    raise OfficialFormatError(f"{what}: {blocks} to-RGB layers do not match resolution {m.resolution}")
  _check_kwarg(args, "size", m.resolution, what)
  _check_kwarg(args, "fc_dim", m.hidden_size, what)
  return m


def d_config(nets: OfficialNetworks, resolution: int) -> ml_collections.ConfigDict:
  """config.discriminator read from the file's D (or the recipe's default without one)."""
  d = config_utils.discriminator_defaults(resolution)
  if nets.model != "creps":
    d.conv_clamp = None
  if nets.d is None:
    return d
  sd = nets.d
  if nets.model == "creps":
    kw = nets.d_kwargs
    if kw.get("architecture", "resnet") != "resnet":
      raise OfficialFormatError(f"CREPS D: architecture {kw['architecture']!r} (only 'resnet')")
    res = int(kw.get("img_resolution", resolution))
    blocks = [2 ** i for i in range(int(np.log2(res)), 2, -1)]
    widths = {res: _shape(sd, f"b{res}.fromrgb.weight", 0), 4: _shape(sd, "b4.conv.weight", 0)}
    widths.update({r // 2: _shape(sd, f"b{r}.conv1.weight", 0) for r in blocks})
    epilogue = kw.get("epilogue_kwargs") or {}
    d.mbstd_group_size = int(epilogue.get("mbstd_group_size", 4))
    d.mbstd_num_channels = int(epilogue.get("mbstd_num_channels", 1))
    clamp = kw.get("conv_clamp")
    d.conv_clamp = None if clamp is None else float(clamp)
  else:
    n = _count(sd, "convs.{}.conv1.0.weight", first=1)
    res = 2 ** (n + 2)
    widths = {res: _shape(sd, "convs.0.0.weight", 0), 4: _shape(sd, "final_conv.0.weight", 0)}
    widths.update({res // 2 ** k: _shape(sd, f"convs.{k}.conv2.1.weight", 0)
                   for k in range(1, n + 1)})
    d.mbstd_group_size, d.mbstd_num_channels = 4, 1
  if res != resolution:
    raise OfficialFormatError(f"D is {res}x{res} but G renders {resolution}x{resolution}")
  d.channel_base, d.channel_max = channel_table(widths, "D")
  return d


def official_config(nets: OfficialNetworks, source: str) -> ml_collections.ConfigDict:
  """The full gen_synth config of the file: its architecture and its paper's recipe."""
  if nets.model == "creps":
    m = creps_model_config(nets.g_ema, nets.g_kwargs)
  elif nets.model == "pixelfolder":
    m = pixelfolder_model_config(nets.g_ema, nets.args)
  else:
    m = cips_model_config(nets.g_ema, nets.args)
  config = config_utils.base_config(m.resolution)
  config.model = m
  if nets.model != "creps":
    config_utils.rosinality_training(config, batch_size=64 if nets.model == "pixelfolder" else 32)
  config.discriminator = d_config(nets, m.resolution)
  config.imported_from = ml_collections.ConfigDict(dict(
      path=os.path.abspath(source), format=nets.format, model=nets.model,
      sha256=_sha256(source),
      networks=",".join(k for k in ("g_ema", "g", "d") if getattr(nets, k) is not None)))
  return config


def _sha256(path):
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


# --- conversion -------------------------------------------------------------------

def generator_table(config, name="G"):
  m = config.model
  if m.name == "creps":
    return creps_table.generator_table(m.resolution, m.mapping_layers,
                                       min(m.channel_base // 4, m.channel_max), m.rank, name)
  if m.name == "pixelfolder":
    return pixelfolder_table.pixelfolder_table(
        int(np.log2(m.resolution)) // 2 - 1, m.mapping_layers, name)
  return pixelfolder_table.cips_table(int(np.log2(m.resolution)) - 1, m.mapping_layers, name)


def discriminator_table(config, model_name):
  d = config.discriminator
  c4 = min(d.channel_base // 4, d.channel_max)
  if model_name == "creps":
    return discriminator_tables.stylegan2_table(d.resolution, c4)
  return discriminator_tables.rosinality_table(d.resolution, c4)


def convert(nets: OfficialNetworks, config, w_avg_samples: int = 4096):
  """(G_ema variables, G params | None, D params | None) in gen_synth's layout."""
  model = sampling.build_model(config)
  template = jax.eval_shape(lambda: sampling.init_variables(model, 0))
  g_table = generator_table(config, "G_ema")
  stats_free = {k: v for k, v in template.items() if k != "stats"}
  if nets.model == "creps":
    g_ema = name_tables.apply_table(g_table, nets.g_ema, template)
  else:
    g_ema = name_tables.apply_table(g_table, nets.g_ema, stats_free)
    g_ema["stats"] = {"mapping": {"w_avg": mean_w(model, g_ema, w_avg_samples)}}
  g = None
  if nets.g is not None:
    g = name_tables.apply_table(generator_table(config, "G"), nets.g,
                                template if nets.model == "creps" else stats_free)["params"]
  d = None
  if nets.d is not None:
    disc = discriminator_lib.build_discriminator(config.discriminator)
    r = config.discriminator.resolution
    d_template = jax.eval_shape(lambda: disc.init(jax.random.PRNGKey(0),
                                                  jnp.zeros((4, r, r, 3), jnp.float32)))
    d = name_tables.apply_table(discriminator_table(config, nets.model), nets.d,
                                d_template)["params"]
  return g_ema, g, d


def mean_w(model, variables, samples: int, seed: int = 0):
  """[w_dim] mean of mapping(z) over `samples` z ~ N(0, I) (rosinality's mean_latent)."""
  z = jax.random.normal(jax.random.PRNGKey(seed), (samples, model.z_dim), jnp.float32)
  ws = model.apply(dict(variables, stats={"mapping": {"w_avg": jnp.zeros((model.w_dim,))}}),
                   z, method="mapping")
  return np.asarray(jnp.mean(ws[:, 0], axis=0))


def write_run(workdir, config, g_ema, g=None, d=None) -> None:
  """WORKDIR/config.json + checkpoint 0 (G_ema; G, D, fresh Adam for training)."""
  g_tx, d_tx = train_steps.make_optimizers(config.train)
  g_params = g if g is not None else g_ema["params"]
  if d is None:                                   # a G-only file: D starts fresh
    logging.warning("the file holds no D: the imported run has a freshly initialised D")
    disc = discriminator_lib.build_discriminator(config.discriminator)
    r = config.discriminator.resolution
    d = jax.jit(disc.init)(jax.random.PRNGKey(config.train.seed),
                           jnp.zeros((4, r, r, 3), jnp.float32))["params"]
  state = train_steps.TrainState(
      step=np.zeros((), np.int32), g_params=g_params, g_ema_params=g_ema["params"],
      d_params=d, g_opt=g_tx.init(g_params), d_opt=d_tx.init(d),
      fixed=g_ema.get("fixed", {}), stats=g_ema["stats"], pl_mean=np.zeros((), np.float32),
      **train_steps.fresh_augment_state(config.train))
  generator_item, train_item = checkpointing.split_train_state(state)
  checkpointing.write_config(workdir, config)
  manager = checkpointing.checkpoint_manager(workdir, max_to_keep=None)
  checkpointing.save(manager, 0, generator_item, train_item,
                     meta=dict(data_position=None, imported_from=dict(config.imported_from)),
                     force=True)
  manager.close()


def import_checkpoint(source: str, workdir: str, model: Optional[str] = None,
                      w_avg_samples: int = 4096) -> ml_collections.ConfigDict:
  """Reads `source`, converts it and writes the run directory; returns its config."""
  if checkpointing.has_checkpoint(workdir):
    raise OfficialFormatError(f"{workdir} already holds a checkpoint; import into a new directory")
  nets = read_official(source, model)
  config = official_config(nets, source)
  g_ema, g, d = convert(nets, config, w_avg_samples)
  write_run(workdir, config, g_ema, g, d)
  return config


# --- CLI -------------------------------------------------------------------------

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("source", None, "The official .pkl (CREPS) or .pt (PixelFolder, CIPS).")
  flags.DEFINE_string("workdir", None, "The gen_synth run directory to write (new).")
  flags.DEFINE_enum("model", None, list(MODELS), "Expected model (default: auto-detect).")
  flags.DEFINE_integer("w_avg_samples", 4096,
                       "z samples for w_avg when the file has none (PixelFolder, CIPS).")


def main(argv):
  cli.no_arguments(argv)
  if not FLAGS.source or not FLAGS.workdir:
    raise cli.UserError("give --source=FILE (the official .pkl / .pt) and --workdir=DIR")
  if not os.path.isfile(FLAGS.source):
    raise cli.UserError(f"--source={FLAGS.source}: no such file")
  cli.check_writable_dir(FLAGS.workdir)
  cli.quiet_checkpoint_logs()
  with cli.user_errors(OfficialFormatError, name_tables.TableMismatchError,
                       safe_pickle.UnsafePickleError, pickle.UnpicklingError):
    config = import_checkpoint(FLAGS.source, FLAGS.workdir, FLAGS.model, FLAGS.w_avg_samples)
  m = config.model
  print(f"imported {config.imported_from.networks} of a {m.name} {m.resolution}x{m.resolution} "
        f"model into {FLAGS.workdir} (checkpoint step 0)")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
