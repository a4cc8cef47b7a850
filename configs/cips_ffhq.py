r"""CIPS-skip on FFHQ, as the official saic-mdal/CIPS `train.py --Generator=CIPSskip`.

Presets (`--config=configs/cips_ffhq.py:ARGS`):
  res=256|512|1024   the official CIPSskip at that size (default 256, the paper's table;
                     the official code builds any power of two; its learned embedding
                     is res x res x 512, i.e. 537 M parameters at 1024)
  tiny               a small 32x32 model for tests and CPU demos

Commands:
  # parameter counts and cost (res=256: 44,317,092 trainable params, 222.9 GMACs)
  python -m gen_synth.summary --config=configs/cips_ffhq.py:res=256
  # any size, tiled (CIPS is pixel-independent)
  python -m gen_synth.generate --config=configs/cips_ffhq.py:tiny --seeds=0-3 \
      --height=48 --width=80 --tile=16 --outdir=/tmp/out

Training recipe (sources: saic-mdal/CIPS README command and `train.py`; the
PixelFolder repository's copy of the loop is the same):
  batch_size 32        README: 8 GPUs x `--batch=4`
  g_lr = d_lr 0.002    `--lr` default; Adam betas (0, 0.99)
  lazy_reg_adjust      lr * I/(I+1), betas ** (I/(I+1)); I = g_reg_every 4 (G), d_reg_every 16 (D)
  r1_gamma 10          `--r1` default, every d_reg_every = 16 steps
  pl_weight 0          the loop never computes the path-length loss; pl_interval 4 kept for
                       G's Adam adjustment
  style_mixing_prob 0  `--mixing` default 0 (CIPSskip uses one w for every layer anyway)
  ema                  accumulate(g_ema, g, 0.5 ** (32 / (10 * 1000))) per step:
                       ema_kimg = batch_size * 10 / 32, no ramp-up
  xflip True           RandomHorizontalFlip in the training transform
  discriminator        residual D, channel_multiplier 2 (cbase 32768, cmax 512), no clamp
"""

from gen_synth import config_utils


def get_config(arg=None):
  arg = config_utils.parse_arg(arg, res=256, tiny=False)
  if not arg.tiny and arg.res not in (256, 512, 1024):
    raise ValueError(f"res must be 256, 512 or 1024, got {arg.res}")
  res = 32 if arg.tiny else arg.res
  config = config_utils.base_config(res)

  m = config.model
  m.name = "cips"
  m.resolution = res
  m.z_dim = m.w_dim = 512          # --latent
  m.mapping_layers = 8             # n_mlp
  m.hidden_size = 512              # --fc_dim: LFF and embedding width
  m.channel_base = 32768           # channels table with channel_multiplier 2
  m.channel_max = 512
  m.emb_align_corners = True       # False: the official eval-mode grid_sample
  m.noise_mode = "random"
  m.coord_convention = "linspace"  # convert_to_coord_format: linspace(-1, 1)

  config_utils.rosinality_training(config, batch_size=32)

  if arg.tiny:
    m.z_dim = m.w_dim = 64
    m.mapping_layers = 2
    m.hidden_size = 16
    m.channel_base = 256           # widths 32, 32, 16, 8 for the 4 blocks at 32 px
    m.channel_max = 32
    config_utils.tiny_training(config)
  return config
