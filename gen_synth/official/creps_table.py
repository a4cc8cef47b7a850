"""Name-mapping table: official CREPS (VinAIResearch/CREPS `training/networks_creps.py`) -> gen_synth.

Official `Generator` state dict (NCHW, biline layout [N, C, R, 2 * rank]):

  mapping.fc{i}.weight [w, w]          -> params/mapping/net/fc{i}/kernel   (transposed)
  mapping.w_avg [w]                    -> stats/mapping/w_avg
  synthesis.b4.input.freqs [1, C/2 * rank]     -> fixed/input/freqs [C/2, rank]
      (frequency index = channel pair * rank + r, the official reshape)
  synthesis.b4.input.weight [1, C, 1, 2 rank]  -> params/input/amplitude [C, 2, rank]
      (the last axis holds the row line's rank entries, then the column line's)
  synthesis.b4.input.affine.*          -> params/input/affine/*  (its C * 2 rank outputs are
      ordered [C, 2, rank] in both code bases)
  synthesis.b{r}.fc0|fc1|tores.{weight, bias, affine.*} -> params/b{r}/...
  synthesis.decoder_{r}.{i}.*          -> params/decoder_{r}/fc{i}/*    (r >= 16)
  synthesis.decoder_last.{i}.*, synthesis.decoder_img.*
  synthesis.block0|block1.*            -> params/refine0|refine1/*

Left over, by construction of the official code:
  unused    b4's to-bi-line layer (b4.tores.*) and decoder_8.* (built, never run):
            578,880 parameters at the official widths;
  constants synthesis.b4.input.coords [1, R, 2, 1], linspace(0, 1, R) twice: gen_synth
            computes the coordinates of any requested size itself.
"""

import numpy as np

from gen_synth.official import name_tables as nt


def _modulated(official, target):
  return (nt.linear(official, target)
          + nt.linear(f"{official}.affine", f"{target}/affine"))


def _coords_check(resolution):
  grid = np.linspace(0, 1, resolution, dtype=np.float32)
  return lambda x: x.shape == (1, resolution, 2, 1) and np.allclose(
      x[0, :, 0, 0], grid, atol=1e-6) and np.allclose(x[0, :, 1, 0], grid, atol=1e-6)


def generator_table(resolution: int, mapping_layers: int, channels_b4: int, rank: int,
                    name: str = "G") -> nt.Table:
  """The table of an official CREPS generator with `resolution` (blocks b4 .. bR)."""
  blocks = [2 ** i for i in range(2, int(np.log2(resolution)) + 1)]
  rules = []
  for i in range(mapping_layers):
    rules += nt.linear(f"mapping.fc{i}", f"params/mapping/net/fc{i}")
  rules.append(nt.Rule("mapping.w_avg", "stats/mapping/w_avg"))
  s = "synthesis"
  rules += [
      nt.Rule(f"{s}.b4.input.freqs", "fixed/input/freqs",
              nt.reshape_to(channels_b4 // 2, rank)),
      nt.Rule(f"{s}.b4.input.weight", "params/input/amplitude",
              nt.reshape_to(channels_b4, 2, rank)),
  ]
  rules += nt.linear(f"{s}.b4.input.affine", "params/input/affine")
  for res in blocks:
    layers = ("fc1",) if res == 4 else ("fc0", "fc1", "tores")
    for layer in layers:
      rules += _modulated(f"{s}.b{res}.{layer}", f"params/b{res}/{layer}")
  for res in blocks[2:]:
    for i in range(4):
      rules += nt.linear(f"{s}.decoder_{res}.{i}", f"params/decoder_{res}/fc{i}")
  for i in range(4):
    rules += nt.linear(f"{s}.decoder_last.{i}", f"params/decoder_last/fc{i}")
  rules += nt.linear(f"{s}.decoder_img", "params/decoder_img")
  for b in (0, 1):
    for layer in ("fc0", "fc1", "tores"):
      rules += _modulated(f"{s}.block{b}.{layer}", f"params/refine{b}/{layer}")
  unused = [f"{s}.b4.tores.{p}" for p in ("weight", "bias", "affine.weight", "affine.bias")]
  unused += [f"{s}.decoder_8.{i}.{p}" for i in range(4) for p in ("weight", "bias")]
  return nt.Table(f"CREPS {name}", tuple(rules), tuple(unused),
                  {f"{s}.b4.input.coords": _coords_check(resolution)})
