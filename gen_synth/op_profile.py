"""Where a compiled computation spends its time: a profile by kind of op, with FLOPs.

`profile(compiled, *args)` runs an XLA executable (`jax.jit(f).lower(...)
.compile()`) under `jax.profiler` and joins the trace with the executable's
optimised HLO: XLA:CPU records one event per executed op ("thunk", named
after its HLO instruction; an op in a loop body once per iteration), and the
HLO says what each op is (its kind) and how many FLOPs it does. The result
splits a call into the time of its dots and convolutions, with their rate,
and the time of everything else (elementwise passes, reductions, copies),
so a phase's distance from the GEMM peak splits into a GEMM rate and time
spent outside GEMMs.

Kinds (`Op.kind`):
  gemm         a dot, alone or fused with elementwise work around it
  convolution  a convolution, alone or fused
  reduction    a reduce, or a fusion whose computation reduces
  elementwise  a loop fusion or a single elementwise op
  copy         copy / transpose (layout changes)
  other        slices, dynamic-update-slices, concatenations, gathers, ...
  container    a loop, conditional or call (its body's ops are counted)

FLOPs count dots and convolutions only (2 per multiply-add), as
`gen_synth.cost` and PyTorch's counter do; a convolution's count leaves out
the taps that fall on padding or on the holes of an input dilation, as XLA's
cost analysis does (tests/test_op_profile.py checks the two agree).

XLA:CPU runs plain dots and convolutions asynchronously on Eigen's thread
pool: their events mark the launch only, so they are timed together, as the
call's wall time outside every other op's event (`Profile.gemm_s`). Every
other op (including YNNPACK fusions) runs within its event and is timed
exactly. The op names and this behaviour are those of jaxlib 0.10's XLA:CPU;
on another backend the events differ and the profile is not meaningful.
"""
import collections
import dataclasses
import glob
import gzip
import json
import math
import os
import re
import tempfile
import time
from typing import Dict, List, Optional

import jax

# %name = shape opcode(operands), attributes
_INSTR_RE = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\([^=]*?\)|\S+) ([\w\-]+)\((.*)$")
_COMP_RE = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{\s*$")
_SHAPE_RE = re.compile(r"\b([a-z]+[0-9]*)\[([0-9,]*)\]")
_CALLS_RE = re.compile(r"calls=%([\w.\-]+)")
_COPY_OPS = {"copy", "transpose"}
_CONTAINER_OPS = {"while", "conditional", "call"}
_ASYNC_OPS = {"dot", "convolution"}     # XLA:CPU's thunks that return before they finish
_ELEMENTWISE_OPS = {
    "add", "subtract", "multiply", "divide", "maximum", "minimum", "exponential", "log",
    "tanh", "sine", "cosine", "sqrt", "rsqrt", "negate", "abs", "select", "compare",
    "convert", "power", "broadcast", "clamp", "logistic", "erf", "and", "or", "not",
    "exponential-minus-one", "log-plus-one", "sign"}


@dataclasses.dataclass(frozen=True)
class Op:
  """One HLO instruction: `kind` (module docstring), FLOPs per execution,
  its output shape, and the JAX op name it came from (metadata op_name)."""
  name: str
  opcode: str
  kind: str
  flops: float
  shape: str
  source: str
  fused: bool = False     # inside a fusion's computation: never run on its own


def _dims(spec: str) -> List[int]:
  return [int(d) for d in spec.split(",") if d]


def _operand_names(rest: str) -> List[str]:
  """Names of an instruction's operands (`rest`: the text after its opening paren;
  the optimised HLO names operands without their shapes)."""
  depth, end = 1, 0
  for end, ch in enumerate(rest):
    depth += ch == "("
    depth -= ch == ")"
    if depth == 0:
      break
  return re.findall(r"%([\w.\-]+)", rest[:end])


def _shape_dims(shape: str) -> List[int]:
  m = _SHAPE_RE.search(shape)
  return _dims(m.group(2)) if m else []


def _dot_flops(shape: str, lhs: List[int], rest: str) -> float:
  m = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", rest)
  contracted = math.prod(lhs[d] for d in _dims(m.group(1))) if m else 1
  return 2.0 * math.prod(_shape_dims(shape)) * contracted


def _window(rest: str, field: str, n: int, default: int) -> List[List[int]]:
  """A window field of a convolution, per spatial dimension ('pad': [lo, hi] pairs)."""
  m = re.search(rf"\b{field}=([0-9_x\-]+)", rest)
  if not m:
    return [[default, default] if field == "pad" else [default] for _ in range(n)]
  return [[int(v) for v in part.split("_")] for part in m.group(1).split("x")]


def _valid_taps(out: int, k: int, stride: int, pad_lo: int, size: int, lhs_dil: int,
                rhs_dil: int) -> int:
  """Kernel taps that land on an input pixel, summed over the output positions
  of one spatial dimension (padding and the holes of input dilation excluded)."""
  taps = 0
  for o in range(out):
    for t in range(k):
      pos = o * stride + t * rhs_dil - pad_lo
      taps += 0 <= pos <= (size - 1) * lhs_dil and pos % lhs_dil == 0
  return taps


def _conv_flops(shape: str, lhs: List[int], kernel: List[int], rest: str) -> float:
  """2 x the multiply-adds of a convolution over real input pixels, as XLA's
  cost analysis counts them (padding and input-dilation zeros excluded)."""
  lhs_l, kernel_l, out_l = re.search(r"dim_labels=([^_]+)_([^-]+)->(\S+?)[,\s]", rest + " ").groups()
  out = _shape_dims(shape)
  spatial = [c for c in kernel_l if c not in "io"]
  n = len(spatial)
  size, stride = _window(rest, "size", n, 1), _window(rest, "stride", n, 1)
  pad, lhs_dil = _window(rest, "pad", n, 0), _window(rest, "lhs_dilate", n, 1)
  rhs_dil = _window(rest, "rhs_dilate", n, 1)
  taps = 1
  for i, c in enumerate(spatial):
    taps *= _valid_taps(out[out_l.index(c)], size[i][0], stride[i][0], pad[i][0],
                        lhs[lhs_l.index(c)], lhs_dil[i][0], rhs_dil[i][0])
  macs = taps * out[out_l.index("b")] * out[out_l.index("f")] * kernel[kernel_l.index("i")]
  return 2.0 * macs


def _parse(hlo_text: str):
  """({name: (opcode, shape, rest)}, {computation: [instruction names]})."""
  raw, comps = {}, collections.defaultdict(list)
  current = None
  for line in hlo_text.splitlines():
    comp = _COMP_RE.match(line)
    if comp and " = " not in line.split("{")[0]:
      current = comp.group(1)
      continue
    m = _INSTR_RE.match(line)
    if not m or current is None:
      continue
    name, shape, opcode, rest = m.groups()
    raw[name] = (opcode, shape, rest)
    comps[current].append(name)
  return raw, comps


def hlo_ops(hlo_text: str) -> Dict[str, Op]:
  """{instruction name: Op} of every instruction of an optimised HLO module text
  (`compiled.as_text()`), in every computation. A fusion's FLOPs and kind are
  those of the computation it calls, whose instructions are `fused`."""
  raw, comps = _parse(hlo_text)
  fused_comps = {m.group(1) for opcode, _, rest in raw.values() if opcode == "fusion"
                 for m in [_CALLS_RE.search(rest)] if m}
  fused = {n for comp in fused_comps for n in comps.get(comp, [])}

  memo = {}

  def own(name):
    """(flops, has_dot, has_conv, has_reduce) of one instruction, fusions included."""
    if name in memo:
      return memo[name]
    opcode, shape, rest = raw[name]
    memo[name] = (0.0, False, False, False)     # guards against cycles
    operand = lambda i: _shape_dims(raw[_operand_names(rest)[i]][1])
    if opcode == "dot":
      result = (_dot_flops(shape, operand(0), rest), True, False, False)
    elif opcode == "convolution":
      result = (_conv_flops(shape, operand(0), operand(1), rest), False, True, False)
    elif opcode == "fusion":
      called = _CALLS_RE.search(rest)
      parts = [own(n) for n in comps.get(called.group(1), [])] if called else []
      result = (sum(p[0] for p in parts), any(p[1] for p in parts), any(p[2] for p in parts),
                any(p[3] for p in parts))
    else:
      result = (0.0, False, False, opcode in ("reduce", "reduce-window"))
    memo[name] = result
    return result

  ops = {}
  for name, (opcode, shape, rest) in raw.items():
    flops, has_dot, has_conv, has_reduce = own(name)
    if has_conv:
      kind = "convolution"
    elif has_dot:
      kind = "gemm"
    elif has_reduce:
      kind = "reduction"
    elif opcode in _COPY_OPS:
      kind = "copy"
    elif opcode == "fusion" or opcode in _ELEMENTWISE_OPS:
      kind = "elementwise"
    elif opcode in _CONTAINER_OPS:
      kind = "container"
    else:
      kind = "other"
    source = re.search(r'op_name="([^"]*)"', rest)
    ops[name] = Op(name, opcode, kind, flops, shape.split("{")[0],
                   source.group(1) if source else "", name in fused)
  return ops


@dataclasses.dataclass
class OpTime:
  """An op's executions in one profiled call: count and total seconds (None
  for dots and convolutions, whose events mark their launch only)."""
  op: Op
  count: int = 0
  seconds: Optional[float] = 0.0


@dataclasses.dataclass
class Profile:
  """One profiled call: its wall time and the ops it executed.

  XLA:CPU runs dots and convolutions asynchronously (Eigen's thread pool):
  their trace events mark the launch only. Every other op runs in its event,
  so its time is exact. `gemm_s` is the wall time outside those ops' events:
  the time of the dots and convolutions, plus the gaps between ops (dispatch,
  small on a call of seconds), less what of them ran during another op's
  event.
  """
  wall_s: float
  ops: List[OpTime]
  gemm_s: float

  def by_kind(self) -> Dict[str, dict]:
    """{kind: {'s', 'gflop', 'count'}}, loops left out; dots and convolutions
    share one row, 'dot+convolution', timed by `gemm_s`."""
    out = collections.defaultdict(lambda: {"s": 0.0, "gflop": 0.0, "count": 0})
    for t in self.ops:
      if t.op.kind == "container":
        continue
      kind = "dot+convolution" if t.op.opcode in _ASYNC_OPS else t.op.kind
      row = out[kind]
      row["s"] += t.seconds or 0.0
      row["gflop"] += t.op.flops * t.count / 1e9
      row["count"] += t.count
    if "dot+convolution" in out:
      out["dot+convolution"]["s"] = self.gemm_s
    return dict(out)

  def top(self, n: int) -> List[OpTime]:
    """The `n` timed ops (not dots or convolutions) that took longest."""
    return sorted((t for t in self.ops if t.seconds and t.op.kind != "container"),
                  key=lambda t: -t.seconds)[:n]


def _trace_events(trace_dir: str) -> list:
  paths = glob.glob(os.path.join(trace_dir, "**", "*perfetto_trace.json.gz"), recursive=True)
  if not paths:
    return []
  with gzip.open(max(paths, key=os.path.getmtime)) as f:
    data = json.load(f)
  return data["traceEvents"] if isinstance(data, dict) else data


def _exclusive_seconds(intervals):
  """Each interval's share of the time: where k intervals overlap, each gets 1/k."""
  points = sorted([(a, 1, i) for i, (a, b) in enumerate(intervals)]
                  + [(b, 0, i) for i, (a, b) in enumerate(intervals)])
  share, active, last = [0.0] * len(intervals), set(), None
  for t, is_start, i in points:
    if active and last is not None and t > last:
      for j in active:
        share[j] += (t - last) / len(active)
    last = t
    if is_start:
      active.add(i)
    else:
      active.discard(i)
  return share


def profile(compiled, *args, trace_dir: Optional[str] = None):
  """Runs `compiled(*args)` once under `jax.profiler`: (its `Profile`, its outputs).

  `compiled` is a `jax.stages.Compiled`. Run it once before, and wait for it,
  to leave first-run costs (page faults, caches) out of the profile. Where
  timed ops overlap (XLA:CPU may run independent ops at once), each is
  charged an equal share of the overlap.
  """
  text = compiled.as_text()
  ops = hlo_ops(text)
  module = text.split(",", 1)[0].split()[-1]
  with tempfile.TemporaryDirectory() as tmp:
    where = trace_dir or tmp
    with jax.profiler.trace(where, create_perfetto_trace=True):
      t = time.perf_counter()
      outputs = jax.block_until_ready(compiled(*args))
      wall = time.perf_counter() - t
    events = [e for e in _trace_events(where)
              if e.get("ph") == "X" and (e.get("args") or {}).get("hlo_module") == module
              and e["args"].get("hlo_op") in ops]
  timed = [e for e in events if ops[e["args"]["hlo_op"]].opcode not in _ASYNC_OPS
           and ops[e["args"]["hlo_op"]].kind != "container"]
  shares = _exclusive_seconds([(float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0)))
                               for e in timed])
  times = {}
  for e in events:
    op = ops[e["args"]["hlo_op"]]
    entry = times.setdefault(op.name, OpTime(op, 0, None if op.opcode in _ASYNC_OPS else 0.0))
    entry.count += 1
  for e, share in zip(timed, shares):
    times[e["args"]["hlo_op"]].seconds += share / 1e6
  return Profile(wall, list(times.values()), max(wall - sum(shares) / 1e6, 0.0)), outputs


def kind_table(prof: Profile, peak_gflops: float) -> str:
  """A markdown table of `prof.by_kind()`: seconds, share of the call's wall
  time, GFLOP executed and GFLOP/s as a fraction of `peak_gflops`."""
  total = prof.wall_s
  rows = ["| kind | s | share of the call | GFLOP | GFLOP/s | % peak |", "|---" * 6 + "|"]
  for kind, r in sorted(prof.by_kind().items(), key=lambda kv: -kv[1]["s"]):
    rate = r["gflop"] / r["s"] if r["s"] and r["gflop"] else 0.0
    rows.append(f"| {kind} | {r['s']:.3f} | {100 * r['s'] / max(total, 1e-12):.0f} % "
                f"| {r['gflop']:.1f} | {rate:.0f} | "
                + (f"{100 * rate / peak_gflops:.0f} % |" if rate else "- |"))
  gflop = sum(r["gflop"] for r in prof.by_kind().values())
  rows.append(f"| the call | {total:.3f} | 100 % | {gflop:.1f} | {gflop / total:.0f} "
              f"| {100 * gflop / total / peak_gflops:.0f} % |")
  return "\n".join(rows)
