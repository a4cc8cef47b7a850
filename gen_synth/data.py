"""Training input pipeline: deterministic, index-based, per-process batches.

The datasets are the tfds builds of `gen_synth.datasets` (PNG images in
array_record files, read by example index through `as_data_source`). The
order of examples is a pure function of (data seed, epoch):

    sample g (0, 1, 2, ... over the whole run) -> epoch, i = divmod(g, N)
    example  = permutation(seeds, epoch)[i]
    flipped  = xflip and coin(seeds, epoch)[i]

Global batch t holds samples [t*B, (t+1)*B); process p of P takes the
contiguous slice [t*B + p*B/P, t*B + (p+1)*B/P). So the position of a run is
two integers, `{'epoch': e, 'index': i}` with g = e*N + i, and a pipeline
constructed with `position=` continues with exactly the next batch, x-flips
included, whatever the prefetch depth or number of threads. Batches run
across epoch boundaries (no example is dropped at the end of an epoch).

Decoding (PIL PNG) runs on `num_workers` threads, `prefetch` batches ahead;
scaling to [-1, 1] runs on the device.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from gen_synth import data_config
from gen_synth import datasets
from gen_synth.datasets import image_io

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

_PERM_STREAM, _FLIP_STREAM = 0, 1  # Purpose ids folded into the data seeds.

# The data config's fields and defaults (gen_synth/data_config.py, no tfds).
default_data_config = data_config.default_data_config


def _hide_gpus_from_tensorflow():
  """TF (if tfds pulled it in) must not reserve accelerator memory."""
  tf = sys.modules.get('tensorflow')
  if tf is None:
    return
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # Already initialised: it was configured before.
    pass


def prepare_command(data_config) -> str:
  """The `prepare_data` command line that builds what `data_config` reads."""
  parts = ['python -m gen_synth.prepare_data', f'--dataset={data_config.name}',
           f'--source={data_config.source or "/path/to/images"}',
           f'--resolution={data_config.resolution}']
  if data_config.crop_size is not None:
    parts.append(f'--crop_size={data_config.crop_size}')
  if data_config.crop_box is not None:
    parts.append('--crop_box=' + ','.join(map(str, data_config.crop_box)))
  if data_config.allow_upsample:
    parts.append('--allow_upsample')
  if data_config.data_dir:
    parts.append(f'--data_dir={data_config.data_dir}')
  return ' '.join(parts)


def get_builder(data_config, *, build_demo: bool = True):
  """The prepared tfds builder for `data_config`.

  Builds `demo_photos` on first use (no download needed); any other dataset
  must have been prepared with `prepare_data` (one-line error otherwise).
  """
  c = data_config
  config = datasets.make_config(
      c.name, resolution=c.resolution, crop_size=c.crop_size,
      crop_box=c.crop_box, allow_upsample=c.allow_upsample, source=c.source,
      num_crops=c.num_demo_crops, demo_crop_size=c.demo_crop_size,
      demo_seed=c.demo_seed)
  builder = datasets.make_builder(c.name, config, data_dir=c.data_dir,
                                  source=c.source)
  if not datasets.is_prepared(builder):
    if c.name != 'demo_photos' or not build_demo:
      raise ValueError(
          f'dataset {c.name} ({config.name}) is not prepared in '
          f'{builder.data_path.parent.parent.parent}: run '
          f'`{prepare_command(c)}` first.')
    try:
      datasets.prepare(builder)
    except OSError:  # Another process renamed its build into place first.
      if not datasets.is_prepared(builder):
        raise
    builder = datasets.make_builder(c.name, config, data_dir=c.data_dir)
  _hide_gpus_from_tensorflow()
  return builder


def _split_source(builder, split: str):
  """Random-access source of encoded examples: source[i]['image'] is PNG."""
  if split not in builder.info.splits:
    raise ValueError(f'split {split!r} not in {builder.name}/'
                     f'{builder.builder_config.name}; it has '
                     f'{", ".join(sorted(builder.info.splits))}.')
  return builder.as_data_source(
      split, decoders={'image': tfds.decode.SkipDecoding()})


def epoch_plan(seeds: tuple[int, ...], epoch: int, n: int,
               ) -> tuple[np.ndarray, np.ndarray]:
  """Order and flip coins of one epoch: (int64 [n] permutation, bool [n])."""
  perm = np.random.default_rng([*seeds, epoch, _PERM_STREAM]).permutation(n)
  flips = np.random.default_rng([*seeds, epoch, _FLIP_STREAM]).random(n) < 0.5
  return perm, flips


def sample_plan(seeds: tuple[int, ...], start: int, count: int, n: int,
                ) -> tuple[np.ndarray, np.ndarray]:
  """Example indices and flips of global samples [start, start + count)."""
  g = np.arange(start, start + count, dtype=np.int64)
  epochs, within = np.divmod(g, n)
  index = np.empty(count, np.int64)
  flip = np.empty(count, bool)
  for e in np.unique(epochs):
    sel = epochs == e
    perm, flips = epoch_plan(seeds, int(e), n)
    index[sel], flip[sel] = perm[within[sel]], flips[within[sel]]
  return index, flip


@jax.jit
def _to_float(images: jax.Array) -> jax.Array:
  """uint8 [B, H, W, 3] -> float32 in [-1, 1], same sharding."""
  # XLA may turn the division into a multiply by 1/127.5 (255 -> 1 + 1 ulp);
  # the clip keeps the documented range exact.
  return jnp.clip(images.astype(jnp.float32) / 127.5 - 1.0, -1.0, 1.0)


class InputPipeline:
  """Iterator of global batches float32 [B, R, R, 3] in [-1, 1] (NHWC).

  With `sharding`, each `__next__` returns a global `jax.Array` built with
  `jax.make_array_from_process_local_data` from this process's slice
  [B / process_count, R, R, 3]. Without it, the process-local slice is put
  on the default device (with process_count 1 that is the whole batch).
  """

  def __init__(self, data_config, *, global_batch_size: int,
               sharding: jax.sharding.Sharding | None = None, seed: int = 0,
               position: dict | None = None,
               process_index: int | None = None,
               process_count: int | None = None):
    self._config = data_config
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if global_batch_size <= 0 or global_batch_size % pc:
      raise ValueError(f'global_batch_size={global_batch_size} must be a '
                       f'positive multiple of process_count={pc}.')
    if not 0 <= pi < pc:
      raise ValueError(f'process_index={pi} not in [0, {pc}).')
    if sharding is not None and pc != jax.process_count():
      raise ValueError('a sharding needs the real process_count '
                       f'({jax.process_count()}), not {pc}.')
    if min(data_config.seed, seed) < 0:
      raise ValueError('data seeds must be non-negative.')
    self._builder = get_builder(data_config)
    self._source = _split_source(self._builder, data_config.split)
    self._n = len(self._source)
    self._res = data_config.resolution
    self._seeds = (int(data_config.seed), int(seed))
    self._xflip = bool(data_config.xflip)
    self._global_batch = global_batch_size
    self._local_batch = global_batch_size // pc
    self._offset = pi * self._local_batch
    self._sharding = sharding
    self._next_sample = self._position_to_sample(position or {})
    workers = data_config.num_workers or os.cpu_count() or 1
    self._decode_pool = concurrent.futures.ThreadPoolExecutor(
        workers, thread_name_prefix='gs_decode')
    self._batch_pool = concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix='gs_batch')
    self._prefetch = max(0, int(data_config.prefetch))
    self._pending = collections.deque()  # Futures of the next local batches.

  # --- Position ---------------------------------------------------------------

  def _position_to_sample(self, position: dict) -> int:
    epoch, index = int(position.get('epoch', 0)), int(position.get('index', 0))
    if epoch < 0 or not 0 <= index < self._n:
      raise ValueError(f'position {position} is outside the dataset '
                       f'({self._n} examples).')
    return epoch * self._n + index

  def get_position(self) -> dict:
    """Where the next batch starts: {'epoch': int, 'index': int} (JSON-able)."""
    epoch, index = divmod(self._next_sample, self._n)
    return {'epoch': int(epoch), 'index': int(index)}

  @property
  def num_examples(self) -> int:
    """Examples in the split (one epoch)."""
    return self._n

  @property
  def resolution(self) -> int:
    return self._res

  @property
  def local_batch_size(self) -> int:
    return self._local_batch

  # --- Batches ----------------------------------------------------------------

  @staticmethod
  def _decode(png: bytes, flip: bool) -> np.ndarray:
    image = image_io.decode_png(png)
    return image[:, ::-1] if flip else image

  def _make_local_batch(self, start: int) -> np.ndarray:
    """uint8 [b, R, R, 3]: this process's slice of the global batch `start`."""
    index, flip = sample_plan(self._seeds, start + self._offset,
                              self._local_batch, self._n)
    flip &= self._xflip
    # Records are read on this (single) batch thread, decoded on the pool.
    pngs = [r['image'] for r in self._source.__getitems__(index.tolist())]
    images = self._decode_pool.map(self._decode, pngs, flip.tolist())
    return np.stack(list(images))

  def next_local_uint8(self) -> np.ndarray:
    """The next process-local batch as uint8 [b, R, R, 3] (host only)."""
    while len(self._pending) <= self._prefetch:
      start = self._next_sample + len(self._pending) * self._global_batch
      self._pending.append(
          self._batch_pool.submit(self._make_local_batch, start))
    batch = self._pending.popleft().result()
    self._next_sample += self._global_batch
    return batch

  def __next__(self) -> jax.Array:
    local = self.next_local_uint8()
    if self._sharding is None:
      return _to_float(jax.device_put(local))
    global_shape = (self._global_batch,) + local.shape[1:]
    images = jax.make_array_from_process_local_data(
        self._sharding, local, global_shape)
    return _to_float(images)

  def __iter__(self):
    return self

  def close(self):
    """Stops the decoding threads (pending prefetches are dropped)."""
    for f in self._pending:
      f.cancel()
    self._pending.clear()
    self._batch_pool.shutdown(wait=True, cancel_futures=True)
    self._decode_pool.shutdown(wait=True, cancel_futures=True)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __del__(self):
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except  (interpreter shutdown)
      pass


def load_images(data_config, split: str = 'train',
                max_images: int | None = None) -> np.ndarray:
  """uint8 [N, R, R, 3] of a split in stored order (file-name order).

  For evaluation reference sets (FID/KID): no shuffling, no flips.
  """
  builder = get_builder(data_config)
  source = _split_source(builder, split)
  n = len(source) if max_images is None else min(max_images, len(source))
  workers = data_config.num_workers or os.cpu_count() or 1
  pngs = [r['image'] for r in source.__getitems__(list(range(n)))]
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    images = list(pool.map(image_io.decode_png, pngs))
  r = data_config.resolution
  return np.stack(images) if images else np.zeros((0, r, r, 3), np.uint8)

