"""Every command line ends a user error in one `error:` line (exit 2), no traceback.

Each case runs the real command in a subprocess (`python -m gen_synth.X`),
as a user would; each one imports jax/tfds (a few seconds). Bugs must keep
their traceback: `gen_synth.cli` only turns its own small family of errors
into that line.
"""

import logging as py_logging
import os
import pathlib
import subprocess
import sys

from absl import logging
import pytest

from gen_synth import cli
from tests import helpers

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(*args, cwd=REPO, timeout=300, tmpdir=None):
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # what a user's shell has
  if tmpdir is not None:
    env["TMPDIR"] = str(tmpdir)
  return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                        env=env, timeout=timeout)


def _assert_one_error_line(r, *needles):
  """rc 2, and stderr is exactly one line `error: ...` holding `needles`."""
  assert "Traceback" not in r.stderr, r.stderr
  lines = [line for line in r.stderr.splitlines() if line.strip()]
  assert r.returncode == cli.EXIT_USER_ERROR, (r.returncode, r.stderr)
  assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])
  return lines[0]


# --- The commands ---------------------------------------------------------------


@pytest.mark.parametrize("command, needle", [
    (["gen_synth.generate", "--workdir=/missing"], "--workdir=/missing does not exist"),
    (["gen_synth.generate", "--config=configs/creps_ffhq.py:tiny", "--seeds=0-x"],
     "--seeds=0-x: expected"),
    (["gen_synth.generate", "--height=abc"], "flag --height=abc"),
    (["gen_synth.evaluate", "--workdir=/missing"], "--workdir=/missing does not exist"),
    (["gen_synth.summary"], "--config is required"),
    (["gen_synth.summary", "--config=configs/missing.py"],
     "--config=configs/missing.py cannot be loaded"),
])
def test_user_errors_are_one_line(command, needle):
  _assert_one_error_line(_run("-m", *command), needle)


def test_prepare_data_unknown_dataset(tmp_path):
  r = _run("-m", "gen_synth.prepare_data", "--dataset=celeba", f"--source={tmp_path}",
           f"--data_dir={tmp_path}")
  line = _assert_one_error_line(r)
  assert line == ("error: unknown dataset 'celeba'; choose one of demo_photos, ffhq, "
                  "flickr_scenery, image_folder, lsun_church, metfaces.")


def test_main_stops_before_the_model_when_data_is_not_prepared(tmp_path):
  """FFHQ not prepared: the prepare_data hint, and nothing built or written."""
  workdir, tmpdir = tmp_path / "run", tmp_path / "tmp"
  tmpdir.mkdir()
  r = _run("-m", "gen_synth.main", "--config=configs/creps_ffhq.py", f"--workdir={workdir}",
           f"--config.data.data_dir={tmp_path / 'tfds'}", tmpdir=tmpdir)
  _assert_one_error_line(r, "dataset ffhq (r256) is not prepared",
                         "python -m gen_synth.prepare_data --dataset=ffhq")
  # train_and_evaluate writes WORKDIR/config.json before building the models.
  assert not workdir.exists()
  assert "G params" not in r.stderr
  assert list(tmpdir.iterdir()) == []  # no temp folder left behind (tfds leaks one)


def test_main_checks_the_workdir_and_flags_first(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  r = _run("-m", "gen_synth.main", "--config=configs/creps_ffhq.py:tiny",
           f"--workdir={blocker}/run")
  _assert_one_error_line(r, f"{blocker} is not a folder")
  r = _run("-m", "gen_synth.main", "--config=configs/creps_ffhq.py:tiny")
  _assert_one_error_line(r, "--workdir must have a value")
  assert list(tmp_path.iterdir()) == [blocker]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """A run directory holding a tiny CREPS generator at checkpoint step 3."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from gen_synth import checkpointing
  from gen_synth import sampling
  workdir = tmp_path_factory.mktemp("tiny_run")
  config = helpers.load_config("creps_ffhq.py", "tiny")
  model = sampling.build_model(config)
  abstract = jax.eval_shape(lambda: sampling.init_variables(model, 0))
  # Zeros of the right shapes: what is restored matters here, not its values.
  variables = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract)
  checkpointing.write_config(workdir, config)
  manager = checkpointing.checkpoint_manager(workdir)
  checkpointing.save(manager, 3, variables)
  manager.close()
  return workdir


def test_generate_restores_without_orbax_info_and_checks_step(tiny_run, tmp_path):
  r = _run("-m", "gen_synth.generate", f"--workdir={tiny_run}", "--seeds=0",
           f"--outdir={tmp_path}")
  assert r.returncode == 0, r.stderr
  assert "from checkpoint step 3" in r.stdout
  for orbax_record in ("checkpoint_manager.py", "Restoring checkpoint", "event_tracking.py"):
    assert orbax_record not in r.stderr, r.stderr
  assert (tmp_path / "seed0000.png").exists()
  r = _run("-m", "gen_synth.generate", f"--workdir={tiny_run}", "--step=7")
  _assert_one_error_line(r, "--step=7", "has no checkpoint of that step (it has [3])")


# --- gen_synth.cli itself (in process, or a bare absl program) ------------------------


def test_a_bug_keeps_its_traceback_and_user_errors_do_not():
  bug = _run("-c", "from gen_synth import cli\ncli.run(lambda argv: 1 / 0)")
  assert bug.returncode == 1
  assert "Traceback" in bug.stderr and "ZeroDivisionError" in bug.stderr
  user = _run("-c", "from gen_synth import cli\n"
              "def main(argv):\n  raise cli.UserError('bad\\ninput')\n"
              "cli.run(main)")
  assert _assert_one_error_line(user) == "error: bad input"


def test_user_errors_converts_only_the_named_types():
  with pytest.raises(cli.UserError, match="no such run"):
    with cli.user_errors(FileNotFoundError):
      raise FileNotFoundError("no such run")
  with pytest.raises(cli.UserError, match="^/x/config.json: No such file or directory$"):
    with cli.user_errors(FileNotFoundError):
      raise FileNotFoundError(2, "No such file or directory", "/x/config.json")
  with pytest.raises(KeyError):  # not named: a bug, propagates unchanged
    with cli.user_errors(FileNotFoundError, ValueError):
      raise KeyError("params")


def test_orbax_info_records_are_dropped_and_its_warnings_kept():
  cli.quiet_checkpoint_logs()
  cli.quiet_checkpoint_logs()  # idempotent
  handler = logging.get_absl_handler()
  try:
    assert handler.filters.count(cli._drop_orbax_info) == 1  # pylint: disable=protected-access

    def record(path, level):
      return py_logging.LogRecord("absl", level, path, 1, "msg", None, None)

    orbax = "/site-packages/orbax/checkpoint/checkpoint_manager.py".replace("/", os.sep)
    assert not handler.filter(record(orbax, py_logging.INFO))
    assert handler.filter(record(orbax, py_logging.WARNING))
    assert handler.filter(record("/work/gen_synth/train.py", py_logging.INFO))
  finally:
    handler.removeFilter(cli._drop_orbax_info)  # pylint: disable=protected-access


def test_check_writable_dir_creates_nothing(tmp_path):
  cli.check_writable_dir(str(tmp_path / "new" / "run"))
  assert list(tmp_path.iterdir()) == []
  (tmp_path / "f").write_text("")
  with pytest.raises(cli.UserError, match="is not a folder"):
    cli.check_writable_dir(str(tmp_path / "f" / "run"))
  cli.check_writable_dir("gs://bucket/run")  # remote: left to the first write
