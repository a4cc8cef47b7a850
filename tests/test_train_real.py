"""On real faces (../shared/data, skipped where absent) a tiny CREPS learns: SWD drops."""

import json

import numpy as np

from gen_synth import prepare_data
from gen_synth import train
from tests import helpers

STEPS = 60


def test_tiny_creps_learns_on_real_faces(tmp_path, shared_data_dir):
  config = helpers.load_config("creps_ffhq.py", "tiny")
  d = config.data
  d.name = "image_folder"
  d.source = str(shared_data_dir / "celeba_align_6000.zip")
  d.crop_box = (15, 35, 163, 183)             # the zip README's recipe
  d.data_dir = str(tmp_path / "tfds")
  prepare_data.prepare_dataset(d.name, source=d.source, resolution=d.resolution,
                               data_dir=d.data_dir, crop_box=d.crop_box, progress=False)
  config.train.total_steps = STEPS
  config.train.r1_gamma = 0.01
  config.eval.metrics = "swd"
  config.eval.every_steps = STEPS             # step 0 (baseline) and step STEPS
  config.eval.num_samples = 256
  config.eval.real_split = "holdout"          # identities unseen in training
  config.sample_every_steps = STEPS
  config.checkpoint_every_steps = STEPS
  config.progress_bar = False
  train.train_and_evaluate(config, tmp_path / "run")
  records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  losses = [r["g_loss"] for r in records if "g_loss" in r] + [
      r["d_loss"] for r in records if "d_loss" in r]
  assert losses and np.isfinite(losses).all()
  # R1 / PL run on some steps only; every logging window (10 steps) reports them.
  assert sum("pl_penalty" in r for r in records) >= STEPS // 10
  assert sum("r1_penalty" in r for r in records) >= STEPS // 16
  swd = {r["step"]: r["eval/swd"] for r in records if "eval/swd" in r}
  assert set(swd) == {0, STEPS}
  assert swd[STEPS] < swd[0], swd
