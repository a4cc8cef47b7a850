"""FID Inception-v3 feature extractor in Flax linen (NHWC).

This is the network that the standard FID uses: the 2015 TensorFlow Inception
graph (`inception-2015-12-05`) as ported by pytorch-fid
(`pt_inception-2015-12-05-6726825d.pth`). It differs from torchvision's
Inception-v3 in four places, all reproduced here:

* the average pools inside `Mixed_5b..5d`, `Mixed_6b..6e` and `Mixed_7b` do not
  count the zero padding (`count_include_pad=False`, as TensorFlow's pooling);
* the pool branch of `Mixed_7c` is a 3x3 *max* pool (stride 1, padding 1);
* the classifier has 1008 classes (unused for FID: the features are the
  2048-d output of the final global average pool, "pool3");
* BatchNorm eps is 1e-3 (TensorFlow's value).

Input handling follows pytorch-fid: images in [0, 1] (uint8 images are divided
by 255) are resized bilinearly to 299x299 (half-pixel centres, no
antialiasing: `F.interpolate(..., mode='bilinear', align_corners=False)`), then
scaled to [-1, 1].

Weights come from a local file only (`config.eval.inception_path`), never from
the network: the published `.pth` (needs the optional `torch` extra to
unpickle) or an `.npz` written by `gen_synth.evaluation.convert_inception`,
which holds the same tensor names and layouts (torch OIHW) as the `.pth`.
Every file is checked against `published_tensor_shapes()`: every tensor is used
once, every parameter is filled, every shape equal.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_synth import xla_cpu

FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth")
FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008
BN_EPS = 1e-3

# State-dict entries that torch adds to BatchNorm (a step counter, not a
# weight); tolerated in a file and ignored.
_IGNORED_SUFFIXES = (".num_batches_tracked",)

# Number of learnable parameters (conv weights, BN weight/bias, fc) of the
# published network; written down independently of the table below as a check.
# torchvision's Inception-v3 has 27,161,264 with the 1000-class aux head; the FID
# graph drops the aux head (3,326,696) and has 1008 classes (+16,392).
NUM_PUBLISHED_PARAMETERS = 23_850_960


class MissingInceptionWeightsError(FileNotFoundError):
  """Raised when FID/KID is requested but the Inception weights are absent."""


def missing_weights_message(path: str | None) -> str:
  """The one message shown when the Inception weights are not available."""
  where = ("no path set" if not path else f"file {path!r} does not exist")
  return (
      f"FID Inception-v3 weights not found ({where}; config.eval.inception_path)."
      " FID and KID need the 2015 TensorFlow Inception graph as published by"
      " pytorch-fid. On a machine with internet access download\n"
      f"  {FID_WEIGHTS_URL}\n"
      "then either set --config.eval.inception_path=/path/to/"
      f"{FID_WEIGHTS_FILENAME} (reading a .pth needs torch:"
      " pip install -e '.[convert]'), or convert it once to numpy:\n"
      "  pip install torch  # only for the conversion\n"
      "  python -m gen_synth.evaluation.convert_inception"
      f" --src={FID_WEIGHTS_FILENAME} --dst=inception_fid.npz\n"
      "and set --config.eval.inception_path=/path/to/inception_fid.npz."
      " Without these weights only the weight-free 'swd' metric runs"
      " (KID needs Inception too).")


# ----------------------------------------------------------------------------
# The published tensor table.
# ----------------------------------------------------------------------------


def _conv_table() -> list[tuple[str, int, int, int, int]]:
  """(module name, in, out, kh, kw) of the 94 conv+BN units, published names."""
  t = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3),
       ("Conv2d_2b_3x3", 32, 64, 3, 3), ("Conv2d_3b_1x1", 64, 80, 1, 1),
       ("Conv2d_4a_3x3", 80, 192, 3, 3)]
  for name, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64),
                          ("Mixed_5d", 288, 64)):
    t += [(f"{name}.{n}", i, o, kh, kw) for n, i, o, kh, kw in (
        ("branch1x1", cin, 64, 1, 1),
        ("branch5x5_1", cin, 48, 1, 1), ("branch5x5_2", 48, 64, 5, 5),
        ("branch3x3dbl_1", cin, 64, 1, 1), ("branch3x3dbl_2", 64, 96, 3, 3),
        ("branch3x3dbl_3", 96, 96, 3, 3), ("branch_pool", cin, pool, 1, 1))]
  t += [(f"Mixed_6a.{n}", i, o, kh, kw) for n, i, o, kh, kw in (
      ("branch3x3", 288, 384, 3, 3), ("branch3x3dbl_1", 288, 64, 1, 1),
      ("branch3x3dbl_2", 64, 96, 3, 3), ("branch3x3dbl_3", 96, 96, 3, 3))]
  for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                   ("Mixed_6e", 192)):
    t += [(f"{name}.{n}", i, o, kh, kw) for n, i, o, kh, kw in (
        ("branch1x1", 768, 192, 1, 1),
        ("branch7x7_1", 768, c7, 1, 1), ("branch7x7_2", c7, c7, 1, 7),
        ("branch7x7_3", c7, 192, 7, 1),
        ("branch7x7dbl_1", 768, c7, 1, 1), ("branch7x7dbl_2", c7, c7, 7, 1),
        ("branch7x7dbl_3", c7, c7, 1, 7), ("branch7x7dbl_4", c7, c7, 7, 1),
        ("branch7x7dbl_5", c7, 192, 1, 7), ("branch_pool", 768, 192, 1, 1))]
  t += [(f"Mixed_7a.{n}", i, o, kh, kw) for n, i, o, kh, kw in (
      ("branch3x3_1", 768, 192, 1, 1), ("branch3x3_2", 192, 320, 3, 3),
      ("branch7x7x3_1", 768, 192, 1, 1), ("branch7x7x3_2", 192, 192, 1, 7),
      ("branch7x7x3_3", 192, 192, 7, 1), ("branch7x7x3_4", 192, 192, 3, 3))]
  for name, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
    t += [(f"{name}.{n}", i, o, kh, kw) for n, i, o, kh, kw in (
        ("branch1x1", cin, 320, 1, 1),
        ("branch3x3_1", cin, 384, 1, 1), ("branch3x3_2a", 384, 384, 1, 3),
        ("branch3x3_2b", 384, 384, 3, 1),
        ("branch3x3dbl_1", cin, 448, 1, 1), ("branch3x3dbl_2", 448, 384, 3, 3),
        ("branch3x3dbl_3a", 384, 384, 1, 3), ("branch3x3dbl_3b", 384, 384, 3, 1),
        ("branch_pool", cin, 192, 1, 1))]
  return t


@functools.cache
def published_tensor_shapes() -> dict[str, tuple[int, ...]]:
  """Every tensor of `pt_inception-2015-12-05-6726825d.pth`: name -> shape.

  Torch layouts: conv weights [O, I, kh, kw]; BN vectors [C]; fc [1008, 2048].
  94 conv+BN units x 5 tensors + fc weight/bias = 472 tensors.
  """
  shapes = {}
  for name, cin, cout, kh, kw in _conv_table():
    shapes[f"{name}.conv.weight"] = (cout, cin, kh, kw)
    for field in ("weight", "bias", "running_mean", "running_var"):
      shapes[f"{name}.bn.{field}"] = (cout,)
  shapes["fc.weight"] = (NUM_CLASSES, FEATURE_DIM)
  shapes["fc.bias"] = (NUM_CLASSES,)
  return shapes


# ----------------------------------------------------------------------------
# The network.
# ----------------------------------------------------------------------------


class BasicConv(nn.Module):
  """Conv (no bias) -> BatchNorm (running stats, eps 1e-3) -> ReLU. NHWC."""
  features: int
  kernel: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, H, W, Cin] -> [B, H', W', features]
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel, strides=(self.strides,) * 2,
                padding=((ph, ph), (pw, pw)), use_bias=False,
                dtype=self.dtype, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS,
                     dtype=self.dtype, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3_same(x):
  # TF average pooling: zero padding not counted (pytorch-fid's patch).
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3_s2(x):
  return nn.max_pool(x, (3, 3), (2, 2), padding="VALID")


class InceptionA(nn.Module):
  """Mixed_5b/c/d (FID variant: TF average pool). [B,35,35,C] -> 224+pool."""
  pool_features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = functools.partial(BasicConv, dtype=self.dtype)
    b1 = c(64, (1, 1), name="branch1x1")(x)
    b5 = c(48, (1, 1), name="branch5x5_1")(x)
    b5 = c(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = c(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = c(self.pool_features, (1, 1), name="branch_pool")(
        _avg_pool_3x3_same(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a (grid reduction). [B, 35, 35, 288] -> [B, 17, 17, 768]."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = functools.partial(BasicConv, dtype=self.dtype)
    b3 = c(384, (3, 3), strides=2, name="branch3x3")(x)
    bd = c(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = c(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b..e (FID variant: TF average pool). [B,17,17,768] -> same."""
  channels_7x7: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = functools.partial(BasicConv, dtype=self.dtype)
    c7 = self.channels_7x7
    b1 = c(192, (1, 1), name="branch1x1")(x)
    b7 = c(c7, (1, 1), name="branch7x7_1")(x)
    b7 = c(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = c(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = c(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = c(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = c(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = c(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = c(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = c(192, (1, 1), name="branch_pool")(_avg_pool_3x3_same(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a (grid reduction). [B, 17, 17, 768] -> [B, 8, 8, 1280]."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = functools.partial(BasicConv, dtype=self.dtype)
    b3 = c(192, (1, 1), name="branch3x3_1")(x)
    b3 = c(320, (3, 3), strides=2, name="branch3x3_2")(b3)
    b7 = c(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = c(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = c(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = c(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b / Mixed_7c. [B, 8, 8, C] -> [B, 8, 8, 2048].

  `pool='avg'` is FIDInceptionE_1 (TF average pool), `pool='max'` is
  FIDInceptionE_2 (3x3 max pool, stride 1, as in the 2015 graph).
  """
  pool: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = functools.partial(BasicConv, dtype=self.dtype)
    b1 = c(320, (1, 1), name="branch1x1")(x)
    b3 = c(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate([
        c(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
        c(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
    bd = c(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = c(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([
        c(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
        c(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
    if self.pool == "avg":
      pooled = _avg_pool_3x3_same(x)
    elif self.pool == "max":
      pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
    else:
      raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
    bp = c(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def preprocess(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """pytorch-fid input handling. [B, H, W, 3] uint8 or [0,1] -> [B,size,size,3].

  Bilinear resize with half-pixel centres and no antialiasing (equal to
  `F.interpolate(mode='bilinear', align_corners=False)`), then 2x - 1.
  """
  if images.dtype == jnp.uint8:
    images = images.astype(jnp.float32) / 255.0
  images = images.astype(jnp.float32)
  b, _, _, ch = images.shape
  images = jax.image.resize(images, (b, size, size, ch), method="linear",
                            antialias=False)
  return 2.0 * images - 1.0


class FIDInceptionV3(nn.Module):
  """The FID Inception-v3 network. Images [B, H, W, 3] -> features.

  Returns {'pool3': [B, 2048], 'logits': [B, 1008]}; FID/KID use 'pool3' (the
  logits are computed so that every published tensor has a parameter; under
  jit they are dropped when unused).
  """
  resize_input: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images):
    x = preprocess(images) if self.resize_input else images
    c = functools.partial(BasicConv, dtype=self.dtype)
    x = c(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)  # [B, 149, 149, 32]
    x = c(32, (3, 3), name="Conv2d_2a_3x3")(x)  # [B, 147, 147, 32]
    x = c(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_s2(x)  # [B, 73, 73, 64]
    x = c(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = c(192, (3, 3), name="Conv2d_4a_3x3")(x)  # [B, 71, 71, 192]
    x = _max_pool_3x3_s2(x)  # [B, 35, 35, 192]
    x = InceptionA(32, dtype=self.dtype, name="Mixed_5b")(x)  # 256 ch
    x = InceptionA(64, dtype=self.dtype, name="Mixed_5c")(x)  # 288 ch
    x = InceptionA(64, dtype=self.dtype, name="Mixed_5d")(x)  # 288 ch
    x = InceptionB(dtype=self.dtype, name="Mixed_6a")(x)  # [B, 17, 17, 768]
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                     ("Mixed_6e", 192)):
      x = InceptionC(c7, dtype=self.dtype, name=name)(x)
    x = InceptionD(dtype=self.dtype, name="Mixed_7a")(x)  # [B, 8, 8, 1280]
    x = InceptionE("avg", dtype=self.dtype, name="Mixed_7b")(x)  # 2048 ch
    x = InceptionE("max", dtype=self.dtype, name="Mixed_7c")(x)  # 2048 ch
    pool3 = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # [B, 2048]
    logits = nn.Dense(NUM_CLASSES, dtype=jnp.float32, name="fc")(pool3)
    return {"pool3": pool3, "logits": logits}


# ----------------------------------------------------------------------------
# Weights: published names <-> Flax variables.
# ----------------------------------------------------------------------------


def _flax_location(torch_name: str) -> tuple[str, tuple[str, ...], Callable]:
  """Published tensor name -> (collection, Flax path, layout transform)."""
  parts = torch_name.split(".")
  if parts[0] == "fc":
    if parts[1] == "weight":
      return "params", ("fc", "kernel"), lambda w: w.T  # [1008,2048]->[2048,1008]
    return "params", ("fc", "bias"), lambda w: w
  *module, layer, field = parts
  module = tuple(module)
  if layer == "conv":  # OIHW -> HWIO
    return "params", module + ("conv", "kernel"), lambda w: w.transpose(2, 3, 1, 0)
  collection, leaf = {"weight": ("params", "scale"),
                      "bias": ("params", "bias"),
                      "running_mean": ("batch_stats", "mean"),
                      "running_var": ("batch_stats", "var")}[field]
  return collection, module + ("bn", leaf), lambda w: w


def check_state_dict(state: Mapping[str, Any], source: str = "weights file"
                     ) -> dict[str, np.ndarray]:
  """Checks a state dict against the published table; returns float32 arrays.

  Raises ValueError naming every missing, unexpected and misshaped tensor.
  """
  table = published_tensor_shapes()
  state = {k: v for k, v in state.items() if not k.endswith(_IGNORED_SUFFIXES)}
  missing = sorted(set(table) - set(state))
  extra = sorted(set(state) - set(table))
  misshaped = sorted(
      f"{k}: {tuple(np.shape(state[k]))} (expected {table[k]})"
      for k in set(table) & set(state) if tuple(np.shape(state[k])) != table[k])
  if missing or extra or misshaped:
    def _few(items):
      return ", ".join(items[:8]) + (f", ... ({len(items)} in all)"
                                     if len(items) > 8 else "")
    problems = []
    if missing:
      problems.append(f"{len(missing)} missing: {_few(missing)}")
    if extra:
      problems.append(f"{len(extra)} unexpected: {_few(extra)}")
    if misshaped:
      problems.append(f"{len(misshaped)} misshaped: {_few(misshaped)}")
    raise ValueError(
        f"{source} is not the FID Inception-v3 state dict "
        f"({FID_WEIGHTS_FILENAME}, {len(table)} tensors): "
        + "; ".join(problems) + f". Get the file from {FID_WEIGHTS_URL}.")
  return {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}


def state_dict_to_variables(state: Mapping[str, Any],
                            source: str = "weights file") -> dict[str, Any]:
  """Published state dict -> Flax variables {'params', 'batch_stats'}.

  Every published tensor is placed exactly once and every Flax variable of
  `FIDInceptionV3` must be filled with its exact shape.
  """
  state = check_state_dict(state, source)
  target = variable_shapes()
  out: dict[str, Any] = {}
  for name, value in state.items():
    collection, path, transform = _flax_location(name)
    node = out.setdefault(collection, {})
    for key in path[:-1]:
      node = node.setdefault(key, {})
    if path[-1] in node:
      raise ValueError(f"{source}: {name} maps onto an already filled variable")
    node[path[-1]] = transform(value)
  flat_out = _flatten(out)
  flat_target = _flatten(target)
  if set(flat_out) != set(flat_target):
    raise ValueError(
        f"{source}: Flax variables not filled: "
        f"{sorted(set(flat_target) - set(flat_out))[:8]}; unused: "
        f"{sorted(set(flat_out) - set(flat_target))[:8]}")
  for key, shape in flat_target.items():
    if flat_out[key].shape != shape:
      raise ValueError(f"{source}: {'/'.join(key)} has shape "
                       f"{flat_out[key].shape}, network expects {shape}")
  return jax.tree.map(jnp.asarray, out)


def _flatten(tree, prefix=()):
  flat = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      flat.update(_flatten(v, prefix + (k,)))
    else:
      flat[prefix + (k,)] = v
  return flat


@functools.cache
def _variable_shapes_cached():
  abstract = jax.eval_shape(
      FIDInceptionV3(resize_input=False).init, jax.random.key(0),
      jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
  return jax.tree.map(lambda a: tuple(a.shape), abstract,
                      is_leaf=lambda a: isinstance(a, jax.ShapeDtypeStruct))


def variable_shapes() -> dict[str, Any]:
  """Shapes of the Flax variables of `FIDInceptionV3` (no computation)."""
  return _variable_shapes_cached()


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads the published `.pth` (needs torch) or a converted `.npz`."""
  if not path or not os.path.exists(path):
    raise MissingInceptionWeightsError(missing_weights_message(path))
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  if path.endswith((".pth", ".pt")):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          f"Reading {path} needs torch (pip install -e '.[convert]'). Without"
          " torch, convert it once elsewhere: python -m "
          "gen_synth.evaluation.convert_inception --src=" + path +
          " --dst=inception_fid.npz, and point config.eval.inception_path at"
          " the .npz.") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.detach().cpu().numpy() for k, v in state.items()}
  raise ValueError(f"Unknown Inception weights format {path!r}: expected the "
                   f"published .pth or a converted .npz ({FID_WEIGHTS_URL}).")


def load_inception_variables(path: str | None) -> dict[str, Any]:
  """Loads and checks the FID Inception weights -> Flax variables."""
  return state_dict_to_variables(read_state_dict(path), source=str(path))


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
  """A state dict with the published names/shapes and random values (tests).

  Conv/fc weights ~ N(0, 1/fan_in) so activations stay O(1) through the net;
  BN statistics are positive variances and small means.
  """
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in published_tensor_shapes().items():
    if name.endswith("running_var"):
      value = rng.uniform(0.5, 1.5, shape)
    elif name.endswith(("bn.weight",)):
      value = rng.uniform(0.5, 1.5, shape)
    elif name.endswith(("bias", "running_mean")):
      value = 0.1 * rng.standard_normal(shape)
    else:
      fan_in = int(np.prod(shape[1:]))
      value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    out[name] = value.astype(np.float32)
  return out


def make_feature_fn(variables, batch_size: int = 32, dtype=jnp.float32
                    ) -> Callable[[np.ndarray], np.ndarray]:
  """Returns f(images [N, H, W, 3] uint8 or [0,1]) -> [N, 2048] float32 numpy.

  Images are fed in fixed-size batches (the last one padded) so the jitted
  network compiles once per input resolution.
  """
  model = FIDInceptionV3(dtype=dtype)

  @xla_cpu.jit
  def _apply(x):
    return model.apply(variables, x)["pool3"]

  def features(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    n = images.shape[0]
    out = []
    for start in range(0, n, batch_size):
      chunk = images[start:start + batch_size]
      pad = batch_size - chunk.shape[0]
      if pad:
        chunk = np.concatenate(
            [chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
      out.append(np.asarray(_apply(chunk))[:batch_size - pad])
    return (np.concatenate(out) if out
            else np.zeros((0, FEATURE_DIM), np.float32))

  return features
