"""Two processes on localhost (jax.distributed, gloo CPU collectives) train identically."""

import os
import socket
import subprocess
import sys

import numpy as np

from gen_synth import data as data_lib
from tests import helpers


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_end_with_identical_parameters(tmp_path):
  config = helpers.load_config("creps_ffhq.py", "tiny")
  config.data.data_dir = str(tmp_path / "tfds")
  config.data.num_demo_crops = 64
  data_lib.get_builder(config.data)            # build the demo data once, before the race
  port = _free_port()
  worker = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
  env = dict(os.environ)                       # the worker sets its own device count
  procs = [subprocess.Popen(
      [sys.executable, worker, str(i), str(port), str(tmp_path / "run"),
       config.data.data_dir, str(tmp_path / f"p{i}.npz")],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=900)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-4000:]
  a, b = (np.load(tmp_path / f"p{i}.npz") for i in range(2))
  assert int(a["step"]) == int(b["step"]) == 3
  keys = [k for k in a.files if k != "step"]
  assert len(keys) > 10
  for k in keys:
    np.testing.assert_array_equal(a[k], b[k])
  assert (tmp_path / "run" / "checkpoints" / "3").exists()
