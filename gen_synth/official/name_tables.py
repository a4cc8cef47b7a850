"""Name-mapping tables from official tensor names to gen_synth variables, and their checks.

A table lists, for one network, every official tensor and where it goes:

  Rule("synthesis.b8.fc0.weight", "params/b8/fc0/kernel", FC)

`official` is the name in the official `state_dict()`; `target` the path in
gen_synth's variables ('params/...', 'fixed/...', 'stats/...'); `layout` the
function that turns the official array into gen_synth's (transposes,
reshapes, flattening order). Every layout difference between the two code
bases lives in the tables, nowhere else. Equalized-lr gains and bias
multipliers need no conversion: both code bases store the raw N(0, 1) / lr_mul
weights and the bias_init biases and apply the same gains at run time.

`apply_table` fills a gen_synth variable tree from an official state dict and
refuses anything but an exact match: every gen_synth leaf filled exactly once,
every shape equal, and the official tensors left over exactly the table's
`unused` ones (built but never run by the official code) plus its
`constants` (fixed buffers, e.g. FIR filters or coordinate grids, that
gen_synth computes itself; their values are checked).
"""

import dataclasses
from typing import Callable, Dict, Mapping, Sequence, Tuple

import flax
import numpy as np


class TableMismatchError(ValueError):
  """The official file does not match the table (missing, extra or misshapen tensors)."""


@dataclasses.dataclass(frozen=True)
class Layout:
  """A named array conversion official -> gen_synth."""
  name: str
  fn: Callable[[np.ndarray], np.ndarray]

  def __call__(self, x):
    return np.array(self.fn(np.asarray(x)), dtype=np.float32, order="C")  # (keeps 0-d arrays)


SAME = Layout("same", lambda x: x)
FC = Layout("fc [out, in] -> [in, out]", lambda x: x.T)
CONV = Layout("conv [out, in, kh, kw] -> [kh, kw, in, out]", lambda x: x.transpose(2, 3, 1, 0))
MODCONV = Layout("modconv [1, out, in, kh, kw] -> [kh, kw, in, out]",
                 lambda x: x[0].transpose(2, 3, 1, 0))
SCALAR = Layout("[1] -> []", lambda x: x.reshape(()))
FLAT = Layout("[1, C, 1, 1] -> [C]", lambda x: x.reshape(-1))
NCHW_CONST = Layout("[1, C, H, W] -> [H, W, C]", lambda x: x[0].transpose(1, 2, 0))
LFF = Layout("1x1 conv [C, 2, 1, 1] -> [2, C]", lambda x: x[:, :, 0, 0].T)


def fc_from_nchw_flatten(channels: int, height: int, width: int) -> Layout:
  """An FC after a flatten of [C, H, W] (official, NCHW) -> after [H, W, C] (gen_synth).

  official W[o, c*H*W + h*W + w]  ->  gen_synth K[(h*W + w)*C + c, o].
  """
  def fn(x):
    out = x.shape[0]
    return x.reshape(out, channels, height * width).transpose(2, 1, 0).reshape(-1, out)
  return Layout(f"fc over NCHW flatten [{channels},{height},{width}] -> NHWC", fn)


def reshape_to(*shape) -> Layout:
  return Layout(f"reshape {shape}", lambda x: x.reshape(shape))


@dataclasses.dataclass(frozen=True)
class Rule:
  official: str
  target: str
  layout: Layout = SAME


@dataclasses.dataclass(frozen=True)
class Table:
  """Rules for one network, plus the official tensors with no gen_synth counterpart."""
  network: str
  rules: Tuple[Rule, ...]
  unused: Tuple[str, ...] = ()                       # built, never run by the official code
  constants: Mapping[str, Callable[[np.ndarray], bool]] = dataclasses.field(
      default_factory=dict)                           # fixed buffers gen_synth recomputes

  def unused_count(self, state_dict) -> int:
    return int(sum(np.asarray(state_dict[n]).size for n in self.unused if n in state_dict))


def linear(official: str, target: str, bias: bool = True) -> Tuple[Rule, ...]:
  """An equalized FC: weight [out, in] -> kernel [in, out], bias as is."""
  rules = (Rule(f"{official}.weight", f"{target}/kernel", FC),)
  if bias:
    rules += (Rule(f"{official}.bias", f"{target}/bias"),)
  return rules


def flatten_template(template) -> Dict[str, Tuple[int, ...]]:
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(template), sep="/")
  return {k: tuple(v.shape) for k, v in flat.items()}


def apply_table(table: Table, state_dict: Mapping[str, np.ndarray], template) -> dict:
  """Official state dict -> gen_synth variables shaped like `template` (a pytree of arrays
  or ShapeDtypeStructs). Raises TableMismatchError on anything but an exact match."""
  shapes = flatten_template(template)
  filled, problems = {}, []
  for rule in table.rules:
    if rule.official not in state_dict:
      problems.append(f"official tensor {rule.official!r} (for {rule.target}) is missing")
      continue
    if rule.target not in shapes:
      problems.append(f"{rule.official!r} maps to {rule.target!r}, which gen_synth does not have")
      continue
    if rule.target in filled:
      problems.append(f"{rule.target!r} is filled twice")
      continue
    try:
      value = rule.layout(state_dict[rule.official])
    except ValueError as e:
      problems.append(f"{rule.official!r} {np.shape(state_dict[rule.official])}: "
                      f"layout '{rule.layout.name}' failed ({e})")
      continue
    if value.shape != shapes[rule.target]:
      problems.append(f"{rule.official!r} {np.shape(state_dict[rule.official])} -> "
                      f"{value.shape} via '{rule.layout.name}', but {rule.target} is "
                      f"{shapes[rule.target]}")
      continue
    filled[rule.target] = value
  problems += [f"gen_synth {t} {s} has no official tensor" for t, s in shapes.items()
               if t not in filled and not any(r.target == t for r in table.rules)]
  mapped = {r.official for r in table.rules}
  leftover = set(state_dict) - mapped
  expected = set(table.unused) | set(table.constants)
  problems += [f"official tensor {n!r} {np.shape(state_dict[n])} is not in the table"
               for n in sorted(leftover - expected)]
  problems += [f"official tensor {n!r} expected (built but never run) is missing"
               for n in sorted(set(table.unused) - set(state_dict))]
  for name, check in table.constants.items():
    if name in state_dict and not check(np.asarray(state_dict[name])):
      problems.append(f"official buffer {name!r} differs from what gen_synth computes")
  if problems:
    raise TableMismatchError(f"{table.network}: the official tensors do not match gen_synth's "
                             f"model:\n  " + "\n  ".join(problems))
  return flax.traverse_util.unflatten_dict(filled, sep="/")


def fir_kernel_check(taps: Sequence[float] = (1, 3, 3, 1), gain: float = 1.0):
  """A check that an official [k, k] FIR buffer is the normalised outer product of `taps`."""
  t = np.asarray(taps, np.float64)
  k = np.outer(t, t)
  k = k / k.sum() * gain
  return lambda x: x.shape == k.shape and np.allclose(x, k, atol=1e-7)
