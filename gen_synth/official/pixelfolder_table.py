"""Name-mapping tables: official PixelFolder and CIPS-skip (BlingHe/PixelFolder `model/`,
saic-mdal/CIPS) -> gen_synth.

Both are rosinality-style generators saved as `state_dict()`s (NCHW):

  style.{i+1}.weight [w, w] / .bias     -> params/mapping/net/fc{i}/*  (style.0 is the pixel norm)
  StyledConv X: X.conv.weight [1, out, in, k, k] -> X/conv/kernel [k, k, in, out];
                X.conv.modulation.*     -> X/conv/affine/*  (the style affine, bias init 1);
                X.noise.weight [1]      -> X/noise/weight [];  X.activate.bias -> X/bias
  ToRGB X:      X.conv.* as above (no demodulation); X.bias [1, 3, 1, 1] -> X/bias [3]
  LFF:          X.ffm.conv.weight [C, 2, 1, 1] -> X/kernel [2, C]; .bias

PixelFolder, stage s (0 .. num_stages - 1), fold step j (0, 1):
  input.input [1, C, U, U]              -> params/const [U, U, C]
  lffs.{s}                              -> params/lff{s}
  posfolders.{s}.conv0 / conv1 / conv_merge (ConvLayer: .0.weight, .1.bias)
                                        -> params/stage{s}/posfold_conv0 / _conv1 / _merge
  convs.{4s + i} (i = 0 .. 3)           -> params/stage{s}/conv{i}
  to_rgbs.{2s + j}                      -> params/stage{s}/to_rgb{j}
  unused: posfolders.0.conv_merge (stage 0 builds it, never runs it: 524,800 at 256)
  constants: to_rgbs.*.upsample.kernel (the [1, 3, 3, 1] FIR x 4)
The fold / unfold channel order is the official one in both code bases
(gen_synth.models.pixelfolder.fold), so no weight is permuted for it.

CIPS-skip:
  lff -> params/lff; emb.input [1, C, R, R] -> params/emb [R, R, C];
  conv1, linears.{i}, to_rgbs.{i} -> params/conv1, linear{i}, to_rgb{i}.
Neither file holds w_avg (rosinality code computes a mean latent when sampling):
the importer computes it (see gen_synth.import_official).
"""

from gen_synth.official import name_tables as nt


def _mapping(layers):
  rules = []
  for i in range(layers):
    rules += nt.linear(f"style.{i + 1}", f"params/mapping/net/fc{i}")
  return rules


def _modconv(official, target):
  return (nt.Rule(f"{official}.conv.weight", f"{target}/conv/kernel", nt.MODCONV),
          *nt.linear(f"{official}.conv.modulation", f"{target}/conv/affine"))


def _styled_conv(official, target):
  return _modconv(official, target) + (
      nt.Rule(f"{official}.noise.weight", f"{target}/noise/weight", nt.SCALAR),
      nt.Rule(f"{official}.activate.bias", f"{target}/bias"))


def _to_rgb(official, target):
  return _modconv(official, target) + (nt.Rule(f"{official}.bias", f"{target}/bias", nt.FLAT),)


def _lff(official, target):
  return (nt.Rule(f"{official}.ffm.conv.weight", f"{target}/kernel", nt.LFF),
          nt.Rule(f"{official}.ffm.conv.bias", f"{target}/bias"))


def _conv_layer(official, target):
  return (nt.Rule(f"{official}.0.weight", f"{target}/kernel", nt.CONV),
          nt.Rule(f"{official}.1.bias", f"{target}/bias"))


def pixelfolder_table(num_stages: int, mapping_layers: int, name: str = "G") -> nt.Table:
  rules = _mapping(mapping_layers)
  rules.append(nt.Rule("input.input", "params/const", nt.NCHW_CONST))
  constants = {}
  upsample = nt.fir_kernel_check(gain=4.0)
  for s in range(num_stages):
    rules += _lff(f"lffs.{s}", f"params/lff{s}")
    p = f"posfolders.{s}"
    if s == 0:
      rules += _conv_layer(f"{p}.conv0", f"params/stage{s}/posfold_conv0")
    else:
      rules += _conv_layer(f"{p}.conv_merge", f"params/stage{s}/posfold_merge")
    rules += _conv_layer(f"{p}.conv1", f"params/stage{s}/posfold_conv1")
    for i in range(4):
      rules += _styled_conv(f"convs.{4 * s + i}", f"params/stage{s}/conv{i}")
    for j in range(2):
      rules += _to_rgb(f"to_rgbs.{2 * s + j}", f"params/stage{s}/to_rgb{j}")
      constants[f"to_rgbs.{2 * s + j}.upsample.kernel"] = upsample
  unused = ("posfolders.0.conv_merge.0.weight", "posfolders.0.conv_merge.1.bias")
  return nt.Table(f"PixelFolder {name}", tuple(rules), unused, constants)


def cips_table(num_blocks: int, mapping_layers: int, name: str = "G") -> nt.Table:
  rules = _mapping(mapping_layers)
  rules += _lff("lff", "params/lff")
  rules.append(nt.Rule("emb.input", "params/emb", nt.NCHW_CONST))
  rules += _styled_conv("conv1", "params/conv1")
  for i in range(2 * num_blocks):
    rules += _styled_conv(f"linears.{i}", f"params/linear{i}")
  for i in range(num_blocks):
    rules += _to_rgb(f"to_rgbs.{i}", f"params/to_rgb{i}")
  return nt.Table(f"CIPS {name}", tuple(rules))
