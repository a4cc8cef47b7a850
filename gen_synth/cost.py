"""Multiply-accumulate counts read from a lowered (StableHLO) computation.

`macs` counts only dot_general and convolution ops, like PyTorch's FLOP
counter counts only matmul and convolution calls (elementwise ops, sin and
reductions are not counted). Calls to private functions are counted once per
call site. Loops (`while`) are counted once: gen_synth's generators unroll.
"""

import math
import re

import jax

_FUNC_RE = re.compile(r"func\.func (?:public |private )?@([\w.$-]+)\(")
_CALL_RE = re.compile(r"(?:func\.)?call @([\w.$-]+)\(")
_TENSOR_RE = re.compile(r"tensor<([0-9x]*)x?[a-z]+[0-9]*>")


def _shape(spec: str):
  return [int(d) for d in spec.split("x") if d]


def _op_types(line: str):
  """Operand shapes and result shape from the trailing `: (A, B) -> C` of an op."""
  sig = line.rsplit(" : (", 1)[-1]
  shapes = [_shape(m) for m in _TENSOR_RE.findall(sig)]
  return shapes[:-1], shapes[-1]


def _dot_macs(line: str) -> int:
  (lhs, _), out = _op_types(line)
  contracting = re.search(r"contracting_dims = \[([0-9, ]*)\] x", line)
  dims = [int(d) for d in contracting.group(1).split(",") if d.strip()]
  return math.prod(out) * math.prod(lhs[d] for d in dims)


def _conv_macs(line: str) -> int:
  (_, kernel), out = _op_types(line)
  spec = re.search(r"\]x\[([^\]]*)\]->", line).group(1).replace(" ", "").split(",")
  out_features = kernel[spec.index("o")]
  return math.prod(out) * math.prod(kernel) // out_features


def macs_of_text(text: str) -> int:
  """MACs of the `main` function of a StableHLO module text."""
  own, calls, current = {}, {}, None
  for line in text.splitlines():
    func = _FUNC_RE.search(line)
    if func:
      current = func.group(1)
      own[current], calls[current] = 0, []
      continue
    if current is None:
      continue
    if "stablehlo.dot_general" in line:
      own[current] += _dot_macs(line)
    elif "stablehlo.convolution" in line:
      own[current] += _conv_macs(line)
    for callee in _CALL_RE.findall(line):
      calls[current].append(callee)

  memo = {}

  def total(name):
    if name not in memo:
      memo[name] = own.get(name, 0) + sum(total(c) for c in calls.get(name, []))
    return memo[name]

  return total("main")


def xla_flops(stage) -> float:
  """FLOPs of a `jax.jit(...).lower(...)` (before optimisation, no compile) or
  of its `.compile()` by XLA's cost analysis, which counts a loop body once
  (the two agree within 0.3 % for CREPS's training phases at res 64)."""
  analysis = stage.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis.get("flops", float("nan")))


def one_pass(model):
  """`model` as costed: CREPS's per-pixel half in one pass (`compose_tile_pixels=0`).

  The same arithmetic as its tiles, without their loop (counted once here and
  by XLA) and without their recomputation in the backward pass. Other models
  are returned as they are.
  """
  if hasattr(model, "compose_tile_pixels"):
    return model.clone(compose_tile_pixels=0)
  return model


def cost(fn, *args, **kwargs) -> dict:
  """{'macs': dot/conv MACs, 'flops_xla': XLA's cost analysis} of jit(fn)(*args)."""
  lowered = jax.jit(fn).lower(*args, **kwargs)
  return {"macs": macs_of_text(lowered.as_text()), "flops_xla": xla_flops(lowered.compile())}
