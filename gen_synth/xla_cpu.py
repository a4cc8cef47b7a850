"""Which kernels XLA:CPU runs gen_synth's dots and convolutions with, per executable.

jaxlib 0.10 hands dots, convolutions and reductions to YNNPACK by default
(`xla_cpu_experimental_ynn_fusion_type` = individual_dot,
individual_convolution, reduce). On the 2-core AMD EPYC of this project
(f32) YNNPACK's 3x3 convolutions ran at 90-105 GFLOP/s and its
convolution weight gradient at 11-45, against 145-160 and 130-145 for XLA's
own (Eigen) kernels; its dots at D's and G's shapes at 80-105 against 100-125.
Its reductions are the faster ones (the path-length phase slows by ~20 %
without them). So gen_synth compiles its hot paths (training phases,
generation, evaluation) with YNNPACK kept for reductions only:

  res-128 CREPS training, batch 4 (D's conv_impl 'gemm' under the defaults,
  its best there; 'maps' here): Dmain 18.8 -> 13.5 s, Dreg (R1) 18.7 -> 13.2 s,
  G's phases within run-to-run noise (Gmain 12.0 vs 13.4 s, first reps 11.7
  vs 11.9 s);
  generation at 256 px, s/img at batch 1 / 4: CREPS 0.97 / 0.88 -> 0.86 / 0.86,
  PixelFolder 0.68 / 0.63 -> 0.53 / 0.46

(`experiments/benchmarks/train.py` and `generation.py` with --xla_default_kernels,
2026-12-06; both measure the two side by side.) Only this EPYC was measured:
on an AVX-512 CPU YNNPACK's kernels may compare differently.

It also compiles them at LLVM optimisation level 1
(`xla_backend_optimization_level`; XLA's default is 3). Only the code XLA
emits itself is affected (fusions, loops); the GEMM and convolution kernels
are precompiled. The level-3 passes bought nothing measurable there and cost
start-up: res-128 CREPS training, batch 4, processes alternating the levels
(2-core AMD EPYC, 2026-12-07): the five phases compiled in 47.5-66.2 s
against 57.7-81.0 s (five pairs), the state's initialisation in 7.3-8.6 s
against 10.7-12.4 s; the phases ran within run-to-run noise (Gmain, Dmain
and Dreg as fast or faster, Greg within 4 %), with bit-identical losses and
gradient norms. Generation at 256 px stayed within the VM's noise.

Low-precision compute (bfloat16 or float16 as a model's compute dtype):
YNNPACK's dots take bfloat16 operands with float32 accumulation at nearly
twice the float32 rate on a CPU with AVX512-BF16, where XLA's own kernels
convert to float32 first. An executable that computes in such a dtype
(`jit(..., compute_dtype=...)`, or `compute_dtype_of=` a static argument
whose `.dtype` says it, e.g. the model) is compiled with YNNPACK kept for
dots too (LOW_PRECISION_YNN_FUSIONS); float32 executables keep XLA's kernels.
On the 2-core AMD EPYC of this project (its /proc/cpuinfo lists avx512f and
avx512_bf16), a 4096^2 matmul of bfloat16 operands with float32 accumulation
ran at 367 GFLOP/s with YNNPACK, 211 with XLA's kernels (float32: 209), and
CREPS-256's line features in bfloat16 at 310 GFLOP/s with YNNPACK's dots
against 178 with XLA's (`layers.matmul_last` accumulates such dots in
float32). Only bfloat16 was measured; float16 takes the same options.

The choice is made per executable (`jax.jit(..., compiler_options=...)`),
never through process-wide flags, and only on the CPU backend: GPUs and TPUs
compile as before. Each option a user's XLA_FLAGS set wins: gen_synth then
leaves that one out (e.g. `--xla_cpu_experimental_ynn_fusion_type=+reduce`
keeps XLA's default kernels, `--xla_backend_optimization_level=3` its
default level). An option this jaxlib does not know is left out too (checked
once).
"""

import functools
import inspect
import os
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp

OPTION = "xla_cpu_experimental_ynn_fusion_type"
YNN_FUSIONS = "LIBRARY_FUSION_TYPE_REDUCE"    # dots and convolutions: XLA's own kernels
# Executables that compute in bfloat16 / float16: YNNPACK's dots too.
LOW_PRECISION_YNN_FUSIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
OPT_LEVEL_OPTION = "xla_backend_optimization_level"
OPT_LEVEL = 1                                  # XLA's default: 3

# gen_synth's options on the CPU backend, in the order they are documented above.
CPU_OPTIONS = {OPTION: YNN_FUSIONS, OPT_LEVEL_OPTION: OPT_LEVEL}


@functools.lru_cache(maxsize=None)
def _supported(option: str, value: Any) -> bool:
  """Whether this jaxlib compiles with option=value (a tiny probe, once per process)."""
  try:
    jax.jit(lambda x: x + 1).lower(jnp.zeros(())).compile(compiler_options={option: value})
    return True
  except Exception:  # pylint: disable=broad-except  (an unknown option or enum value)
    return False


def is_low_precision(dtype: Any) -> bool:
  """Whether `dtype` (a dtype, its name or None) is a floating type narrower than float32."""
  if dtype is None:
    return False
  dtype = jnp.dtype(dtype)
  return bool(jnp.issubdtype(dtype, jnp.floating)) and dtype.itemsize < 4


def compiler_options(backend: Optional[str] = None,
                     compute_dtype: Any = None) -> Optional[Dict[str, Any]]:
  """The compiler options gen_synth compiles with on `backend` (default: jax's), or None.

  On CPU: CPU_OPTIONS (with LOW_PRECISION_YNN_FUSIONS where `compute_dtype` is
  bfloat16 or float16), less each one the user's XLA_FLAGS name and each one
  this jaxlib does not know. None where nothing is left, and on other backends.
  """
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return None
  wanted = dict(CPU_OPTIONS)
  if is_low_precision(compute_dtype):
    wanted[OPTION] = LOW_PRECISION_YNN_FUSIONS
  user_flags = os.environ.get("XLA_FLAGS", "")
  options = {k: v for k, v in wanted.items()
             if k not in user_flags and _supported(k, v)}
  return options or None


try:  # jax has no public test for this; the pinned jax has this one (0.2 us a call)
  from jax._src.core import trace_state_clean as _trace_state_clean  # pylint: disable=g-import-not-at-top
except ImportError:  # another jax: a probe array (~27 us and a device allocation a call)
  _trace_state_clean = None


def _tracing() -> bool:
  """Whether this runs inside a jax transformation's trace (jit, eval_shape, grad...)."""
  if _trace_state_clean is not None:
    return not _trace_state_clean()
  return isinstance(jnp.zeros(()), jax.core.Tracer)


class _Jit:
  """`jax.jit(fun, compiler_options=compiler_options(compute_dtype=...), **kwargs)`.

  Each jitted function is built on first use, one per kind of compute dtype
  (float32 / low precision): the dtype is `compute_dtype`, or the `.dtype` of
  the static argument named `compute_dtype_of` in each call (a model passed as
  a static argument computes in its own dtype). Building lazily keeps
  module-level decorators from initialising the backend at import time (tests
  and multi-process runs set it up after importing). Called inside another
  trace (e.g. `jax.eval_shape(lambda: init_variables(m))`), it is a plain
  nested `jax.jit`: jax takes compiler options at the top level only, and the
  outer executable's options apply to the whole program.
  """

  def __init__(self, fun: Callable, kwargs: Dict[str, Any], compute_dtype: Any = None,
               compute_dtype_of: Optional[str] = None):
    functools.update_wrapper(self, fun)
    self._fun, self._kwargs, self._jitted, self._nested = fun, kwargs, {}, None
    self._fixed_low_precision = is_low_precision(compute_dtype)   # decided once
    self._dtype_of = compute_dtype_of
    self._signature = inspect.signature(fun) if compute_dtype_of else None

  def _low_precision(self, args, kwargs) -> bool:
    if self._dtype_of is None:
      return self._fixed_low_precision
    bound = self._signature.bind_partial(*args, **kwargs).arguments
    return is_low_precision(getattr(bound.get(self._dtype_of), "dtype", None))

  def _get(self, low_precision: bool):
    if low_precision not in self._jitted:
      # bfloat16 stands for any low-precision dtype: they share one set of options.
      options = compiler_options(compute_dtype=jnp.bfloat16 if low_precision else None)
      self._jitted[low_precision] = jax.jit(self._fun, compiler_options=options, **self._kwargs)
    return self._jitted[low_precision]

  def __call__(self, *args, **kwargs):
    if _tracing():
      if self._nested is None:
        self._nested = jax.jit(self._fun, **self._kwargs)
      return self._nested(*args, **kwargs)
    return self._get(self._low_precision(args, kwargs))(*args, **kwargs)

  def lower(self, *args, **kwargs):
    return self._get(self._low_precision(args, kwargs)).lower(*args, **kwargs)


def jit(fun: Optional[Callable] = None, *, compute_dtype: Any = None,
        compute_dtype_of: Optional[str] = None, **kwargs):
  """`jax.jit` with gen_synth's CPU kernel choice; also a decorator (`@jit(static_argnames=...)`).

  compute_dtype: the dtype the program computes in (bfloat16 / float16 pick
  LOW_PRECISION_YNN_FUSIONS on CPU); compute_dtype_of: or the name of a
  static argument whose `.dtype` gives it in each call.
  """
  if fun is None:
    return lambda f: _Jit(f, kwargs, compute_dtype, compute_dtype_of)
  return _Jit(fun, kwargs, compute_dtype, compute_dtype_of)
