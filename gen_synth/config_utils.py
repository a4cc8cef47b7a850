"""Helpers for ml_collections config files (big_vision `configs/common.py` style)."""

import ml_collections


def parse_arg(arg, lazy=False, **spec):
  """Parses 'res=256,tiny' style config arguments into a ConfigDict.

  Every key must be in `spec` (name -> default); a bare word sets a bool to True.
  A bare word that is not a bool key is taken as the value of the first key
  (so `:tiny` works with `preset` first). Values are cast to the default's type.
  """
  out = ml_collections.ConfigDict(dict(spec))
  if not arg:
    return out
  first = next(iter(spec))
  for item in arg.split(","):
    if not item:
      continue
    if "=" in item:
      key, value = item.split("=", 1)
    elif isinstance(spec.get(item), bool):
      key, value = item, "True"
    else:
      key, value = first, item
    if key not in spec:
      if lazy:
        continue
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(spec)}")
    default = spec[key]
    if isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes")
    elif default is None:
      out[key] = value
    else:
      out[key] = type(default)(value)
  return out


def training_defaults(resolution: int) -> ml_collections.ConfigDict:
  """The official StyleGAN2/CREPS training recipe (`train.py --cfg=creps`).

  Sources: VinAIResearch/CREPS `train.py` and `training/training_loop.py`.
  Model configs override what their own papers changed.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 32                # train.py --batch (global)
  c.total_kimg = 25000             # train.py --kimg default
  c.total_steps = ml_collections.config_dict.placeholder(int)  # overrides total_kimg
  c.g_lr = 0.002                   # --glr default for creps
  c.d_lr = 0.002                   # --dlr
  c.adam_b1 = 0.0                  # training_loop: betas (0, 0.99), eps 1e-8
  c.adam_b2 = 0.99
  c.adam_eps = 1e-8
  # StyleGAN2 lazy regularisation: Adam lr *= I / (I + 1) and betas **= I / (I + 1),
  # with I = pl_interval for G and r1_interval for D (training_loop.py mb_ratio).
  c.lazy_reg_adjust = True
  c.r1_gamma = 2.0 * (resolution / 256) ** 2   # required --gamma; docs' rule of thumb
  c.r1_interval = 16               # D_reg_interval
  c.pl_weight = 2.0                # StyleGAN2Loss pl_weight
  c.pl_decay = 0.01
  c.pl_batch_shrink = 2
  c.pl_interval = 4                # G_reg_interval
  c.style_mixing_prob = 0.0        # CREPS turns style mixing off
  c.ema_kimg = c.batch_size * 10 / 32   # ema_kimg = batch * 10 / 32
  c.ema_rampup = 0.05
  # w_avg (truncation) tracking: 'g_phases' as the official CREPS mapping (updated on
  # Gmain's and Greg's latents: training mode and not update_emas), 'd_phase' as
  # StyleGAN2-ADA's (on Dmain's latents, update_emas=True).
  c.w_avg_update = "g_phases"
  # Adaptive discriminator augmentation, on by default as in the official train.py
  # (--aug=ada: the StyleGAN2-ADA 'bgc' pipe, --target=0.6, ada_interval 4,
  # ada_kimg 500; 100 when fine-tuning with --resume). 'none' | 'ada' | 'fixed:<p>'.
  c.augment = "ada"
  c.augment_pipe = "bgc"           # a gen_synth.augment.PRESETS name
  c.augment_p = 0.0                # initial p (train.py --p is for --aug=fixed)
  c.ada_target = 0.6
  c.ada_interval = 4
  c.ada_kimg = 500.0
  c.compute_dtype = "float32"      # 'bfloat16' for TPU/GPU compute, params stay f32
  c.fsdp = False                   # shard params over the data axis instead of replicating
  c.inject_nan_at_step = -1        # test hook: make the G loss NaN at this step
  return c


def discriminator_defaults(resolution: int) -> ml_collections.ConfigDict:
  """StyleGAN2 residual D as CREPS trains it: cbase 32768, cmax 512 (not doubled)."""
  return ml_collections.ConfigDict(dict(
      resolution=resolution, channel_base=32768, channel_max=512,
      mbstd_group_size=4, mbstd_num_channels=1, conv_clamp=256.0,
      # How D's convolutions and their gradients of every order run
      # (models/conv_ops.py): 'auto' = 'maps' on CPU (every order made of the
      # three first-order convolutions), XLA's own gradients ('xla') on GPU/TPU;
      # 'xla' | 'maps' | 'gemm' (shifted-GEMM weight gradient) to force one.
      conv_impl="auto"))


def rosinality_training(config: ml_collections.ConfigDict, batch_size: int) -> None:
  """The recipe shared by the PixelFolder and CIPS `train.py` (rosinality-based), in place.

  lr 0.002 for G and D with the lazy-regularisation adjustment (g_reg_every 4,
  d_reg_every 16), R1 10 every 16, no path length, no style mixing,
  EMA 0.5 ** (32 / 10000) per step without ramp-up, x-flips, no conv clamp.
  """
  t = config.train
  t.batch_size = batch_size
  t.g_lr = t.d_lr = 0.002
  t.lazy_reg_adjust = True
  t.r1_gamma = 10.0
  t.r1_interval = 16
  t.pl_weight = 0.0
  t.pl_interval = 4
  t.style_mixing_prob = 0.0
  t.ema_kimg = t.batch_size * 10 / 32
  t.ema_rampup = None
  t.augment = "none"               # their train.py has no augmentation but x-flips
  config.data.xflip = True
  config.discriminator.conv_clamp = None   # rosinality ops have no clamp


def base_config(resolution: int) -> ml_collections.ConfigDict:
  """Everything but the model's own fields, shared by every config file."""
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(dtype="float32"))
  config.discriminator = discriminator_defaults(resolution)
  config.train = training_defaults(resolution)
  from gen_synth import data_config  # pylint: disable=g-import-not-at-top
  config.data = data_config.default_data_config()
  config.data.name = "ffhq"
  config.data.resolution = resolution
  config.data.xflip = True          # --mirror=1 in the authors' examples
  config.log_every_steps = 50
  config.sample_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.num_sample_images = 16
  config.progress_bar = False       # a tqdm bar on process 0 (the CPU demo)
  config.init_from = ml_collections.config_dict.placeholder(str)  # run dir to start from
  from gen_synth.evaluation import evaluator  # pylint: disable=g-import-not-at-top
  config.eval = evaluator.default_eval_config()
  config.eval.real_split = ml_collections.config_dict.placeholder(str)  # None: data.split
  return config


def tiny_training(config: ml_collections.ConfigDict) -> None:
  """Shrinks D, batch and cadences for tests and the CPU demo (in place)."""
  d = config.discriminator
  d.channel_base = 512
  d.channel_max = 64
  t = config.train
  t.batch_size = 8
  t.total_kimg = 2
  t.ema_kimg = t.batch_size * 10 / 32
  t.augment = "none"               # fast CPU demos and tests; tests that need ADA turn it on
  config.data.name = "demo_photos"
  config.log_every_steps = 10
  config.sample_every_steps = 100
  config.checkpoint_every_steps = 100
  config.num_sample_images = 8
  config.progress_bar = True
  config.eval.every_steps = 0
  config.eval.num_samples = 256
