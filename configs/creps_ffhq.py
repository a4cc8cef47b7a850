r"""CREPS on FFHQ (and the CREPS-NB ablation), as the official `train.py --cfg=creps`.

Presets (`--config=configs/creps_ffhq.py:ARGS`):
  res=128|256|512|1024   the official generator at that resolution (default 256)
  tiny                   a few-hundred-kparam model at 32x32 for tests and CPU demos
  variant=nb             CREPS-NB: same blocks, dense 2-D Fourier input, no bi-line
                         (the paper's Table 4 ablation, presets res=128 and res=256)

Commands:
  # parameter counts and cost (res=256: 29,951,945 trainable params, 53.70 GMACs)
  python -m gen_synth.summary --config=configs/creps_ffhq.py:res=256
  # images from a random initialisation, any size, tiled
  python -m gen_synth.generate --config=configs/creps_ffhq.py:tiny --seeds=0-3 \
      --height=96 --width=160 --outdir=/tmp/out
  # training on a pod (one process per host; data prepared with gen_synth.prepare_data)
  python -m gen_synth.main --config=configs/creps_ffhq.py:res=256 --workdir=gs://bucket/run \
      --config.data.data_dir=gs://bucket/tfds
"""

from gen_synth import config_utils


def get_config(arg=None):
  arg = config_utils.parse_arg(arg, res=256, tiny=False, variant="creps")
  if arg.variant not in ("creps", "nb"):
    raise ValueError(f"variant must be 'creps' or 'nb', got {arg.variant!r}")
  res = 32 if arg.tiny else arg.res
  config = config_utils.base_config(res)

  m = config.model
  m.name = "creps" if arg.variant == "creps" else "creps_nb"
  m.resolution = res
  m.z_dim = m.w_dim = 512
  m.mapping_layers = 8
  m.channel_base = 65536           # 32768 * 2 for creps (train.py)
  m.channel_max = 1024             # 512 * 2 for creps (train.py)
  m.rank = 8                       # SynthesisInput default
  m.biline_channels = 32
  m.bandwidth = 10.0
  m.fc_clamp = 256.0
  m.decoder_widths = (64, 128, 64, 32)
  m.refine_channels = (128, 64)
  m.coord_convention = "linspace"  # official; 'center' for exact scale consistency
  # The per-pixel half in tiles of this many pixels (0: one pass; None: 8192
  # on CPU, one pass on GPU/TPU). Any value gives the same images.
  m.compose_tile_pixels = None
  if arg.tiny:
    m.z_dim = m.w_dim = 64
    m.mapping_layers = 2
    m.channel_base = 1024
    m.channel_max = 64
    m.rank = 4
    m.biline_channels = 8
    m.decoder_widths = (16, 16, 16, 8)
    m.refine_channels = (16, 8)
    config_utils.tiny_training(config)
  return config
