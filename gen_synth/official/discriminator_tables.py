"""Name-mapping tables for the two official discriminators -> gen_synth's `Discriminator`.

Both are the StyleGAN2 residual D (gen_synth.models.discriminator): a from-RGB
1x1 conv, residual blocks R .. 8 (conv0 3x3, conv1 3x3 down 2, skip 1x1 down 2
without bias, (x + skip) / sqrt 2), minibatch stddev, a 3x3 conv and two FCs.

StyleGAN2-ADA `training/networks_stylegan2.Discriminator` (CREPS trains with it):
  b{R}.fromrgb.*, b{r}.conv0.*, b{r}.conv1.*, b{r}.skip.weight -> params/b{r}/...
  b4.conv.* -> params/b4_conv, b4.fc.* -> params/b4_fc, b4.out.* -> params/b4_out
  constants: every `resample_filter` buffer (the [1, 3, 3, 1] FIR, normalised)

rosinality `model/Discriminators.Discriminator` (PixelFolder and CIPS train with it):
  convs.0 (from RGB), convs.k.conv1 / conv2 / skip (k = 1 .. log2 R - 2)
  -> params/b{R / 2^(k-1)}/conv0 / conv1 / skip; final_conv -> b4_conv;
  final_linear.0 / .1 -> b4_fc / b4_out. A ConvLayer is Sequential(
  [Blur,] EqualConv2d (no bias), FusedLeakyReLU (the bias)); constants: the Blur
  `kernel` buffers.

Layout: conv weights [out, in, kh, kw] -> [kh, kw, in, out]; FC weights
transposed; the epilogue FC reads a flatten of [C, 4, 4] officially and of
[4, 4, C] in gen_synth, so its rows are permuted.
"""

import numpy as np

from gen_synth.official import name_tables as nt


def _conv(official, target, bias=True, bias_name=None):
  rules = (nt.Rule(f"{official}.weight", f"{target}/kernel", nt.CONV),)
  if bias:
    rules += (nt.Rule(bias_name or f"{official}.bias", f"{target}/bias"),)
  return rules


def _block_resolutions(resolution):
  return [2 ** i for i in range(int(np.log2(resolution)), 2, -1)]   # R .. 8


def stylegan2_table(resolution: int, channels_4: int) -> nt.Table:
  rules, constants = [], {}
  fir = nt.fir_kernel_check()
  for i, res in enumerate(_block_resolutions(resolution)):
    if i == 0:
      rules += _conv(f"b{res}.fromrgb", f"params/b{res}/fromrgb")
    rules += _conv(f"b{res}.conv0", f"params/b{res}/conv0")
    rules += _conv(f"b{res}.conv1", f"params/b{res}/conv1")
    rules += _conv(f"b{res}.skip", f"params/b{res}/skip", bias=False)
    layers = ["", ".conv0", ".conv1", ".skip"] + ([".fromrgb"] if i == 0 else [])
    constants.update({f"b{res}{l}.resample_filter": fir for l in layers})
  rules += _conv("b4.conv", "params/b4_conv")
  constants["b4.conv.resample_filter"] = fir
  rules += (nt.Rule("b4.fc.weight", "params/b4_fc/kernel",
                    nt.fc_from_nchw_flatten(channels_4, 4, 4)),
            nt.Rule("b4.fc.bias", "params/b4_fc/bias"))
  rules += nt.linear("b4.out", "params/b4_out")
  return nt.Table("StyleGAN2 D", tuple(rules), (), constants)


def rosinality_table(resolution: int, channels_4: int) -> nt.Table:
  rules, constants = [], {}
  blur = nt.fir_kernel_check()
  rules += _conv("convs.0.0", f"params/b{resolution}/fromrgb", bias_name="convs.0.1.bias")
  for k, res in enumerate(_block_resolutions(resolution), start=1):
    b = f"convs.{k}"
    rules += _conv(f"{b}.conv1.0", f"params/b{res}/conv0", bias_name=f"{b}.conv1.1.bias")
    rules += _conv(f"{b}.conv2.1", f"params/b{res}/conv1", bias_name=f"{b}.conv2.2.bias")
    rules += _conv(f"{b}.skip.1", f"params/b{res}/skip", bias=False)
    constants[f"{b}.conv2.0.kernel"] = blur
    constants[f"{b}.skip.0.kernel"] = blur
  rules += _conv("final_conv.0", "params/b4_conv", bias_name="final_conv.1.bias")
  rules += (nt.Rule("final_linear.0.weight", "params/b4_fc/kernel",
                    nt.fc_from_nchw_flatten(channels_4, 4, 4)),
            nt.Rule("final_linear.0.bias", "params/b4_fc/bias"))
  rules += nt.linear("final_linear.1", "params/b4_out")
  return nt.Table("rosinality D", tuple(rules), (), constants)
