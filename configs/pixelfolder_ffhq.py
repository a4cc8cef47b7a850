r"""PixelFolder on FFHQ, as the official BlingHe/PixelFolder `train.sh` / `train.py`.

Presets (`--config=configs/pixelfolder_ffhq.py:ARGS`):
  res=256|512|1024   the official generator at that size (default 256, the paper's;
                     the official code builds 512 and 1024 too: 3 and 4 stages)
  tiny               a ~60-kparam 32x32 model for tests and CPU demos

Commands:
  # parameter counts and cost (res=256: 20,318,814 trainable params = official
  # 20,843,614 minus stage 0's never-run conv_merge (524,800); 23.77 GMACs)
  python -m gen_synth.summary --config=configs/pixelfolder_ffhq.py:res=256
  # images from a random initialisation (only the training size; no --tile)
  python -m gen_synth.generate --config=configs/pixelfolder_ffhq.py:tiny --seeds=0-3 \
      --outdir=/tmp/out

Training recipe (sources; rosinality-style loop, `train.py`):
  batch_size 64        train.sh: 8 GPUs x `--batch=8` (the paper's text says 32)
  g_lr = d_lr 0.002    `--lr` default; both Adam betas (0, 0.99)
  lazy_reg_adjust      train.py scales lr by I/(I+1) and betas by **(I/(I+1)), I = g_reg_every
                       (4) for G and d_reg_every (16) for D
  r1_gamma 10          `--r1` default, applied every d_reg_every = 16 steps (r1_interval)
  pl_weight 0          train.py never computes the path-length loss (path_loss stays 0);
                       pl_interval 4 (`--g_reg_every`) is kept because it sets G's Adam
                       adjustment above
  style_mixing_prob 0  `--mixing` default 0
  ema                  accumulate(g_ema, g, 0.5 ** (32 / (10 * 1000))) every step, i.e.
                       ema_kimg = batch_size * 10 / 32 (a 10-kimg half-life at batch 32),
                       no ramp-up (ema_rampup None)
  xflip True           RandomHorizontalFlip in the training transform
  total_kimg           train.py's `--iter` default (12M steps) is a placeholder; the paper
                       trains ~4 days on 8 V100: kept at the gen_synth default 25000
  discriminator        the CIPS/StyleGAN2 residual D with channel_multiplier 2
                       (cbase 32768, cmax 512), mbstd group 4, no conv clamp
"""

from gen_synth import config_utils


def get_config(arg=None):
  arg = config_utils.parse_arg(arg, res=256, tiny=False)
  if not arg.tiny and arg.res not in (256, 512, 1024):
    raise ValueError(f"res must be 256, 512 or 1024 (the official sizes), got {arg.res}")
  res = 32 if arg.tiny else arg.res
  config = config_utils.base_config(res)

  m = config.model
  m.name = "pixelfolder"
  m.resolution = res
  m.z_dim = m.w_dim = 512          # --latent
  m.mapping_layers = 8             # args.n_mlp = 8 (hard-set in train.py)
  m.channel_base = 32768           # channels table with channel_multiplier 2:
  m.channel_max = 512              # min(32768 / res, 512)
  m.noise_mode = "random"          # fresh noise per call, as the official NoiseInjection
  m.coord_convention = "linspace"  # convert_to_coord_format: linspace(-1, 1)

  config_utils.rosinality_training(config, batch_size=64)

  if arg.tiny:
    m.z_dim = m.w_dim = 64
    m.mapping_layers = 2
    m.channel_base = 512           # widths 64 (8 px), 32 (16 px), 16 (32 px)
    m.channel_max = 64
    config_utils.tiny_training(config)
  return config
