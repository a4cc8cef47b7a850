r"""Input pipeline throughput: images/s per CPU core at 256 and 1024.

Command (recorded numbers in experiments/input_pipeline_benchmark.md):

  python experiments/input_pipeline_benchmark.py --data_dir=/tmp/gs_bench

It builds `demo_photos` at each resolution (crops of the bundled photos, so
the PNGs hold natural image content; at 1024 the 256 px crops are upsampled,
which makes them somewhat smoother, i.e. cheaper to decode, than real FFHQ),
then times `InputPipeline` with 1 decoding thread (= one core) and with all
cores:
  * host: `next_local_uint8()`: read record + PNG decode + flip + stack;
  * full: `next()`: the above + device transfer + scaling to [-1, 1] (here
    the "device" is this CPU too, so this column costs host time as well).
"""

import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax

from gen_synth import data

_DATA_DIR = flags.DEFINE_string('data_dir', '/tmp/gs_bench', 'tfds data dir.')
_SECONDS = flags.DEFINE_float('seconds', 8.0, 'Timing per measurement.')

# resolution -> (num demo crops, demo crop size, batch size)
_SETTINGS = {256: (512, 256, 32), 1024: (64, 256, 8)}


def _rate(pipeline, fn, seconds: float) -> float:
  """Images/s of `fn(pipeline)` after one warm-up batch."""
  jax.block_until_ready(fn(pipeline))
  n, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    jax.block_until_ready(fn(pipeline))
    n += pipeline.local_batch_size
  return n / (time.perf_counter() - start)


def measure(resolution: int, num_workers: int, seconds: float) -> dict:
  num_crops, crop, batch = _SETTINGS[resolution]
  c = data.default_data_config()
  c.data_dir, c.resolution = _DATA_DIR.value, resolution
  c.num_demo_crops, c.demo_crop_size = num_crops, crop
  c.num_workers = num_workers
  results = {}
  for mode, fn in (('host', lambda p: p.next_local_uint8()),
                   ('full', next)):
    with data.InputPipeline(c, global_batch_size=batch) as p:
      results[mode] = _rate(p, fn, seconds)
  return results


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  cores = os.cpu_count()
  print(f'jax {jax.__version__}, {cores} CPU cores, backend '
        f'{jax.default_backend()}')
  print('| resolution | threads | host img/s | full img/s | '
        'host img/s per core |')
  print('| --- | --- | --- | --- | --- |')
  for resolution in _SETTINGS:
    for workers in sorted({1, cores}):
      r = measure(resolution, workers, _SECONDS.value)
      print(f'| {resolution} | {workers} | {r["host"]:.1f} | {r["full"]:.1f} '
            f'| {r["host"] / workers:.1f} |', flush=True)


if __name__ == '__main__':
  app.run(main)
