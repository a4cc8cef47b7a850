"""experiments/notebooks/*.ipynb run top to bottom on CPU with tiny parameters.

Each notebook is executed with nbclient on a Jupyter kernel of *this*
interpreter: the test writes a `python3` kernel spec whose argv is
`sys.executable` into a temporary JUPYTER_PATH (so no kernel installed
elsewhere is picked up), and the injected parameters cell prints the kernel's
`sys.executable` and `sys.prefix`, which must equal the test's. As papermill
does, the tiny parameters go into a cell tagged `injected-parameters` right
after the notebook's one cell tagged `parameters`. A notebook fails on any cell
error and on any output that shows a traceback; each test also checks what its
notebook must have produced (files, inline images, the resume, the skipped
download). The notebooks need neither the network nor ../shared.

The stored notebooks must have no outputs (they are committed stripped) and
must name their Colab link in the header.

Time on the project's idle 2-core AMD EPYC (2026-12-06): 146 s for the three
with a cold XLA compilation cache (most of it compiling train_on_tpu's training
step on 2 virtual devices), 102 s warm. The kernels
use the persistent compilation cache of tests/conftest.py
(GEN_SYNTH_TEST_JAX_CACHE), passed to jax through its environment variables.
"""

import datetime
import json
import math
import os
import pathlib
import re
import sys
import time

import nbclient
import nbformat
import numpy as np
from PIL import Image
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "experiments" / "notebooks"
FIXTURE = REPO / "tests" / "fixtures" / "official" / "creps32.pkl"
COLAB = "https://colab.research.google.com/github/gen-synth/gen_synth/blob/main/experiments/notebooks/"
CELL_TIMEOUT_S = 900
# FID in official_models.ipynb: scipy's sqrtm of a 2048 x 2048 matrix alone takes 1.5-2.5
# minutes on this project's loaded 2-core CPU, so by default the test runs the FID cell's
# guard (a folder without Inception weights); GEN_SYNTH_NOTEBOOK_FID=1 runs FID itself.
RUN_FID = os.environ.get("GEN_SYNTH_NOTEBOOK_FID", "") not in ("", "0")


def _cells_tagged(nb, tag):
  return [i for i, c in enumerate(nb.cells) if tag in c.get("metadata", {}).get("tags", [])]


def _inject(nb, params: dict):
  """A papermill-style `injected-parameters` cell after the `parameters` cell."""
  (index,) = _cells_tagged(nb, "parameters")
  lines = ["# Parameters injected by tests/test_notebooks.py", "import sys",
           "print('kernel sys.executable:', sys.executable)",
           "print('kernel sys.prefix:', sys.prefix)"]
  lines += [f"{name} = {value!r}" for name, value in params.items()]
  cell = nbformat.v4.new_code_cell("\n".join(lines))
  cell.metadata["tags"] = ["injected-parameters"]
  nb.cells.insert(index + 1, cell)
  return index + 1


def _output_text(output) -> str:
  if output.get("output_type") == "stream":
    return output.get("text", "")
  if output.get("output_type") == "error":
    return "\n".join(output.get("traceback", []))
  data = output.get("data", {})
  return "\n".join(str(data[k]) for k in ("text/plain", "text/html") if k in data)


def _cell_text(cell) -> str:
  return "".join(_output_text(o) for o in cell.get("outputs", []))


def _images(cell) -> int:
  return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def _cell_seconds(cell) -> float:
  timing = cell.get("metadata", {}).get("execution", {})
  start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
  if not (start and end):
    return float("nan")
  return (datetime.datetime.fromisoformat(end) -
          datetime.datetime.fromisoformat(start)).total_seconds()


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
  """A `python3` kernel spec of this interpreter; the kernel's environment (inherited)."""
  spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": f"Python 3 ({sys.prefix})", "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter_runtime"))
  monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
  monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
  # The persistent compilation cache of tests/conftest.py, read by jax from the environment.
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", os.environ.get(
      "GEN_SYNTH_TEST_JAX_CACHE", "/tmp/gen_synth_test_jax_cache"))
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2")
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")

  def set_devices(n):
    """XLA_FLAGS for the kernel: n virtual CPU devices, the caller's other flags kept."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                   os.environ.get("XLA_FLAGS", "")).split()
    monkeypatch.setenv("XLA_FLAGS", " ".join(flags + [
        f"--xla_force_host_platform_device_count={n}"]))
  return set_devices


def execute(name: str, params: dict, cwd: pathlib.Path):
  """Runs the notebook with `params` injected; returns (executed notebook, injected index)."""
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  injected = _inject(nb, params)
  client = nbclient.NotebookClient(
      nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, startup_timeout=120,
      record_timing=True, resources={"metadata": {"path": str(cwd)}})
  t0 = time.time()
  try:
    client.execute()
  except nbclient.exceptions.CellExecutionError as e:
    nbformat.write(nb, cwd / f"failed_{name}")
    pytest.fail(f"{name}: a cell failed:\n{str(e)[-6000:]}", pytrace=False)
  wall = time.time() - t0
  nbformat.write(nb, cwd / f"executed_{name}")   # for a look at the outputs
  slow = sorted(((_cell_seconds(c), i) for i, c in enumerate(nb.cells)
                 if c.cell_type == "code"), reverse=True)[:4]
  print(f"\n{name}: {wall:.0f} s wall; slowest cells: "
        + ", ".join(f"#{i} {s:.0f} s" for s, i in slow))
  for i, cell in enumerate(nb.cells):
    if cell.cell_type != "code":
      continue
    text = _cell_text(cell)
    assert "Traceback (most recent call last)" not in text, f"{name} cell {i}:\n{text[-4000:]}"
    errors = [o for o in cell.outputs if o.get("output_type") == "error"]
    assert not errors, f"{name} cell {i}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
  kernel = _cell_text(nb.cells[injected])
  assert f"kernel sys.executable: {sys.executable}\n" in kernel, kernel
  assert f"kernel sys.prefix: {sys.prefix}\n" in kernel, kernel
  return nb, injected


def _cell_with(nb, snippet: str):
  """The executed code cell whose source contains `snippet` (exactly one)."""
  found = [c for c in nb.cells if c.cell_type == "code" and snippet in c.source]
  assert len(found) == 1, f"{len(found)} cells contain {snippet!r}"
  return found[0]


@pytest.mark.parametrize("name", ["train_on_tpu.ipynb", "any_scale.ipynb",
                                  "official_models.ipynb"])
def test_stored_notebook_is_stripped_and_has_one_parameters_cell(name):
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  nbformat.validate(nb)
  assert len(_cells_tagged(nb, "parameters")) == 1
  for i, cell in enumerate(nb.cells):
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, (
          f"{name} cell {i} has outputs: store notebooks stripped")
      assert "execution" not in cell.metadata, f"{name} cell {i} has timing metadata"
  header = nb.cells[0]
  assert header.cell_type == "markdown" and COLAB + name in header.source
  assert "TPU" in header.source and "CPU" in header.source


def test_train_on_tpu_notebook(tmp_path, kernel_env):
  kernel_env(2)   # neither 1 nor 8 devices: the notebook must not assume a count
  workdir = tmp_path / "run"
  nb, _ = execute("train_on_tpu.ipynb", dict(
      CONFIG="creps_ffhq.py:tiny", WORKDIR=str(workdir), MOUNT_DRIVE=False, DATA_SOURCE="",
      UPLOAD_ZIP=False, DATA_DIR=str(tmp_path / "tfds"), NUM_DEMO_CROPS=64,
      BATCH_PER_DEVICE=4, TOTAL_STEPS=4, STEPS_PER_SESSION=2, FSDP=False,
      LOG_EVERY=1, SAMPLE_EVERY=2, CHECKPOINT_EVERY=2, GENERATE_SIZE=64,
      # R1 and path length on every step: one compiled step (all four phases) instead of
      # two, which saves about a minute of XLA compilation on 2 cores.
      CONFIG_OVERRIDES={"train.r1_interval": 1, "train.pl_interval": 1}), tmp_path)
  assert "2 device(s)" in _cell_text(_cell_with(nb, "jax.devices()"))
  assert ("global batch 8 (4 per device), 4 steps = 0.032 kimg, R1 gamma 0.03125 every 1 steps, "
          "path length every 1") in _cell_text(_cell_with(nb, "load_config(CONFIG)"))
  assert "TensorBoard skipped" in _cell_text(_cell_with(nb, "%tensorboard"))
  first = _cell_text(_cell_with(nb, "first_session = run_training()"))
  assert "starting at step 0" in first and "steps 0 -> 2 of 4" in first, first
  second = _cell_text(_cell_with(nb, "second_session = run_training()"))
  assert "resuming from the checkpoint at step 2" in second and "steps 2 -> 4 of 4" in second
  assert "resumed at step 2, where the first session stopped" in second
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                if p.name.isdigit()) == [2, 4]
  assert sorted(p.name for p in (workdir / "samples").iterdir()) == [
      "step00000002.png", "step00000004.png"]
  steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2, 3, 4]
  assert _images(_cell_with(nb, "data_lib.load_images")) == 1       # the training images
  assert _images(_cell_with(nb, 'glob("step*.png")')) == 1          # the sample grids
  assert _images(_cell_with(nb, "GENERATE_SIZE, GENERATE_SIZE)")) == 1


def test_any_scale_notebook(tmp_path, kernel_env):
  from gen_synth import import_official  # pylint: disable=g-import-not-at-top
  kernel_env(1)
  run_dir = tmp_path / "creps32"
  import_official.import_checkpoint(str(FIXTURE), str(run_dir))   # a run dir with a checkpoint
  stream = tmp_path / "stream.png"
  nb, _ = execute("any_scale.ipynb", dict(
      RUN_DIR=str(run_dir), SEED=0, TRUNC=0.7, SIZES=(32, 48, 64, 96), NONSQUARE=(32, 80),
      DISPLAY=96, VIEW_SIZE=48, PAN=(0, 12), ZOOMS=(1, 2, 4, 8), ROTATE=30.0,
      ELASTIC_AMPLITUDE=3.0, ELASTIC_WAVELENGTH=24.0, INTERP_SEEDS="0-2", INTERP_STEPS=4,
      INTERP_SIZE=32, STREAM_SIZE=(96, 160), STREAM_TILE=32, STREAM_PATH=str(stream),
      SCALE_IMAGES=2, SCALE_RESOLUTION=32, OUT_DIR=str(tmp_path / "out")), tmp_path)
  assert "(checkpoint step 0)" in _cell_text(_cell_with(nb, "sampling.load_generator("))
  for snippet, images in (("for s in SIZES:", 2), ("h, w = NONSQUARE", 1), ("def view(", 2),
                          ("rotate=ROTATE", 1), ("write_interpolation", 1),
                          ("stream_render", 2), ("scale_consistency(", 1)):
    assert _images(_cell_with(nb, snippet)) == images, snippet
  rot = re.search(r"np.rot90\(plain\): max abs difference (\S+)",
                  _cell_text(_cell_with(nb, "rotate=ROTATE")))
  assert float(rot.group(1)) < 1e-4
  with Image.open(stream) as im:
    assert im.size == (160, 96)
  assert (tmp_path / "out" / "interp_grid.png").exists() and (tmp_path / "out" / "interp.gif").exists()
  tile = re.search(r"max difference (\d+) \(uint8", _cell_text(_cell_with(nb, "stream_render")))
  assert int(tile.group(1)) <= 1      # a tile is the crop of the whole image
  table = _cell_text(_cell_with(nb, "scale_consistency("))
  rows = re.findall(r"(linspace|center)\s+(box|point)\s+(\S+)\s+(\S+)", table)
  assert len(rows) == 4, table
  for _, method, psnr, ssim in rows:
    assert float(psnr) > 20 and 0 < float(ssim) <= 1, table


def test_official_models_notebook(tmp_path, kernel_env):
  """The fixture checkpoint imported, sampled, streamed; FID's guard (or FID, opt-in)."""
  kernel_env(1)
  real = tmp_path / "real_images"
  real.mkdir()
  rng = np.random.default_rng(0)
  for k in range(8):
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(real / f"{k}.png")
  weights = ""
  if RUN_FID:   # random Inception weights: the number means nothing, the code runs
    from gen_synth.evaluation import inception  # pylint: disable=g-import-not-at-top
    weights = tmp_path / "inception_random.npz"
    np.savez(weights, **inception.random_state_dict(seed=0))
  workdir, poster = tmp_path / "official_run", tmp_path / "poster.png"
  nb, _ = execute("official_models.ipynb", dict(
      SOURCE=str(FIXTURE), PUBLISHED_URL="https://invalid.example/never-fetched.pkl",
      WORKDIR=str(workdir), SEEDS="0-3", TRUNC=0.7, HEIGHT=48, WIDTH=80, TILE=32,
      POSTER=str(poster), FID_FOLDER=str(real), INCEPTION_PATH=str(weights), FID_IMAGES=8,
      FID_BATCH=8, FID_DATA_DIR=str(tmp_path / "tfds"), OUT_DIR=str(tmp_path / "out")), tmp_path)
  assert "download skipped" in _cell_text(_cell_with(nb, "urlretrieve"))
  imported = _cell_text(_cell_with(nb, '"gen_synth.import_official"'))
  assert "creps 32x32" in imported and "networks: g_ema,g,d" in imported, imported
  config = json.loads((workdir / "config.json").read_text())
  assert config["model"]["name"] == "creps" and config["model"]["resolution"] == 32
  assert _images(_cell_with(nb, "samples_dir = ")) == 1
  assert len(list((tmp_path / "out" / "samples").glob("seed*.png"))) == 4
  with Image.open(poster) as im:
    assert im.size == (80, 48)
  assert _images(_cell_with(nb, "--stream_to=")) == 2
  fid_text = _cell_text(_cell_with(nb, "evaluate_generator"))
  if not RUN_FID:
    assert "FID skipped: " in fid_text and "Inception" in fid_text, fid_text
    assert not (workdir / "eval").exists()
    return
  assert "FID (8 generated vs 8 real images)" in fid_text, fid_text
  fid = json.loads((workdir / "eval" / "notebook_fid.json").read_text())["fid8"]
  assert math.isfinite(fid) and fid >= 0
