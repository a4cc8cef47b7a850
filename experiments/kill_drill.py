r"""Kill -9 drill: training killed at random moments resumes bit-exactly.

  python experiments/kill_drill.py                   # 5 kills, 10 steps
  python experiments/kill_drill.py --short           # the CI form (tests/test_kill_drill.py)
  python experiments/kill_drill.py --kills=12 --steps=16 --seed=3 --workdir=/tmp/drill --keep

Trains the tiny CREPS config of tests/test_train.py (`configs/creps_ffhq.py:tiny`,
64 demo crops, so no download; batch 16, path length and R1 every 2 steps, a
checkpoint every --checkpoint_every steps) with the real command line,
`python -m gen_synth.main`, on the CPU:

  A  uninterrupted to --steps;
  B  the same run, SIGKILLed (its whole process group) --kills times at moments
     drawn from an RNG seeded with --seed, relaunched after each kill (it resumes
     from the latest complete checkpoint), then left to finish.

Each kill aims at one phase:
  compile  a random moment of start-up (imports, restore, init), at the latest
           0.5-3 s after the start-up log line `... devices: [...]`, i.e. while
           the train step is traced and compiled (with --short: always then);
  step     0-0.3 s after the log line of a step that no save follows, once a
           checkpoint exists (so the relaunch resumes from it): mid-step;
  save     0-50 % of run A's measured save time after orbax's temporary
           directory `<step>.orbax-checkpoint-tmp` of the launch's first (or,
           without --short, at random its second) save appears.
Which phase a kill really hit is read off the disk once the process is dead,
never assumed:
  save     a temporary directory this launch wrote to (ctime after the launch)
           survived the kill: it died before orbax's rename committed the save;
  step     otherwise, if a step was logged or a checkpoint committed since launch;
  compile  no progress at all since launch.

Then every checkpoint step both runs hold (at least the final one) is compared:
every leaf of the `generator` item (G_ema params, `fixed`, w_avg) and of the
`train` item (step, G, D, both Adam states, PL mean) by dtype, shape and raw
bytes, and the `meta` item (data position, step) by equality. One JSON summary
goes to stdout (progress to stderr); the exit status is 1 on any mismatch, on a
launch that failed by itself, or, with --short, when a phase got no kill.

Both runs use a copy of gen_synth/ and configs/ taken when the drill starts
(WORKDIR/src, first on PYTHONPATH), so edits made to the tree meanwhile cannot
make A and B differ. The compilation cache (--jax_cache_dir, default inside the
workdir, so run A fills it for B) caches every compile, so a relaunch does not
recompile; it still traces the train step, which keeps a start-up window to
kill in. Everything made under the workdir is removed at the end unless --keep.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ("compile", "step", "save")
TMP_MARK = ".orbax-checkpoint-tmp"
# train._log_startup, written after the state is built or restored and before
# the input pipeline and the train step.
STARTUP_MARKER = re.compile(r"\] jax \S+, \d+ processes, devices:")
COMPILE_GRACE_S = 3.0       # a compile kill lands at most this long after the marker
STEP_DELAY_S = 0.3          # a step kill lands this long (at most) after a step's log line
POLL_S = 0.005

_KILLS = flags.DEFINE_integer("kills", 5, "Kills of run B.")
_STEPS = flags.DEFINE_integer("steps", 10, "Training steps (config.train.total_steps).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the kill plan and moments.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Drill folder (default: a new temp dir).")
_KEEP = flags.DEFINE_bool("keep", False, "Keep the runs, logs and caches it made.")
_SHORT = flags.DEFINE_bool(
    "short", False, "CI form: 6 steps, one kill aimed at each phase (re-aimed, up to 3 "
    "more, at a phase not yet hit); fails unless every phase got a kill.")
_CKPT_EVERY = flags.DEFINE_integer("checkpoint_every", 2, "config.checkpoint_every_steps.")
_DEVICES = flags.DEFINE_integer("devices", 1, "Virtual CPU devices (XLA_FLAGS).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds folder of the demo data "
                                "(default: inside the workdir).")
_JAX_CACHE = flags.DEFINE_string("jax_cache_dir", None, "Persistent XLA compilation "
                                 "cache (default: inside the workdir).")
_LAUNCH_TIMEOUT = flags.DEFINE_float("launch_timeout", 1200.0, "Seconds per launch.")


def _log(msg):
  print(f"[kill_drill {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- one training process ------------------------------------------------------

class Launch:
  """`python -m gen_synth.main` on `workdir` in its own process group, and what
  the drill can see of its progress on disk."""

  def __init__(self, workdir, log_path, argv, env):
    self.workdir, self.log_path = workdir, log_path
    self.ckpt_dir = os.path.join(workdir, "checkpoints")
    self.metrics_path = os.path.join(workdir, "metrics.jsonl")
    self.steps0 = self._committed()
    self.resumed_from = max(self.steps0) if self.steps0 else None
    self.lines0, _ = self._metrics()
    self.t0 = time.monotonic()
    self.t0_ns = time.time_ns()     # temporary dirs changed after this are this launch's
    self.marker_t = None            # when the start-up marker appeared (s since launch)
    self.tmp_seen = {}              # temporary dir -> (first seen, last seen) s since launch
    self._log_pos = 0
    with open(log_path, "ab") as log:
      self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   cwd=workdir, start_new_session=True)

  def elapsed(self):
    return time.monotonic() - self.t0

  def _tmp_dirs(self):
    """orbax temporary dirs this launch created or wrote to. orbax reuses the
    name `<step>.orbax-checkpoint-tmp` (it deletes a stale one first), so they
    are told from an earlier launch's leftovers by their ctime."""
    found = set()
    try:
      names = [n for n in os.listdir(self.ckpt_dir) if TMP_MARK in n]
    except FileNotFoundError:
      return found
    for name in names:
      try:
        if os.stat(os.path.join(self.ckpt_dir, name)).st_ctime_ns >= self.t0_ns:
          found.add(name)
      except FileNotFoundError:   # renamed (committed) or deleted meanwhile
        pass
    return found

  def _committed(self):
    try:
      return {int(n) for n in os.listdir(self.ckpt_dir) if n.isdigit()}
    except FileNotFoundError:
      return set()

  def _metrics(self):
    """(complete lines in metrics.jsonl, the last one's step or None)."""
    try:
      with open(self.metrics_path, "rb") as f:
        lines = f.read().split(b"\n")[:-1]
    except FileNotFoundError:
      return 0, None
    for line in reversed(lines):
      try:      # a kill mid-write can leave half a line, which the next launch extends
        return len(lines), int(json.loads(line)["step"])
      except (ValueError, KeyError):
        continue
    return len(lines), None

  def poll(self):
    """Refreshes marker_t and tmp_seen; returns the exit code or None."""
    now = self.elapsed()
    if self.marker_t is None:
      with open(self.log_path, "rb") as f:
        f.seek(self._log_pos)
        chunk = f.read()
      # Keep a line's worth of overlap so a marker split across reads is found.
      self._log_pos += max(0, len(chunk) - 400)
      if STARTUP_MARKER.search(chunk.decode("utf-8", "replace")):
        self.marker_t = now
    for name in self._tmp_dirs():
      first, _ = self.tmp_seen.get(name, (now, now))
      self.tmp_seen[name] = (first, now)
    return self.proc.poll()

  def new_tmp_dirs(self):
    return set(self.tmp_seen)

  def logged(self):
    """(steps logged since launch, the last logged step)."""
    lines, last = self._metrics()
    return lines - self.lines0, last

  def kill(self):
    try:
      os.killpg(self.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    self.proc.wait()

  def phase_after_death(self):
    """The phase the kill hit, read off the disk (module doc)."""
    left = self._tmp_dirs()
    if left:
      return "save", sorted(left)
    logged, _ = self.logged()
    if logged or self._committed() != self.steps0:
      return "step", []
    return "compile", []

  def log_tail(self, n=4000):
    with open(self.log_path, "rb") as f:
      return f.read().decode("utf-8", "replace")[-n:]


def _wait(launch, until, timeout):
  """Polls until `until()` is true (-> None) or the process exits (-> its code)."""
  while True:
    rc = launch.poll()
    if rc is not None:
      return rc
    if until():
      return None
    if launch.elapsed() > timeout:
      launch.kill()
      raise TimeoutError(f"launch ran past {timeout} s:\n{launch.log_tail()}")
    time.sleep(POLL_S)


# --- the drill -----------------------------------------------------------------

class Drill:

  def __init__(self, root, src, steps, checkpoint_every, data_dir, env, seed, launch_timeout,
               short=False):
    import numpy as np  # pylint: disable=g-import-not-at-top
    self.short = short
    self.root, self.src, self.steps, self.ckpt_every = root, src, steps, checkpoint_every
    self.rng = np.random.default_rng(seed)
    self.timeout = launch_timeout
    self.data_dir, self.env = data_dir, env
    self.launches = 0
    self.a_timing = {}
    self.current = None             # the running Launch, killed if the drill stops

  def stop(self):
    if self.current is not None and self.current.proc.poll() is None:
      self.current.kill()

  def argv(self, workdir):
    c = "--config."
    return [sys.executable, "-m", "gen_synth.main",
            f"--config={os.path.join(self.src, 'configs', 'creps_ffhq.py')}:tiny",
            f"--workdir={workdir}",
            # tests/test_train.py's tiny_config
            f"{c}data.data_dir={self.data_dir}", f"{c}data.num_demo_crops=64",
            f"{c}train.batch_size=16", f"{c}train.pl_interval=2", f"{c}train.r1_interval=2",
            f"{c}log_every_steps=1", f"{c}checkpoint_every_steps={self.ckpt_every}",
            f"{c}sample_every_steps=0", f"{c}progress_bar=False",
            f"{c}train.total_steps={self.steps}"]

  def launch(self, name):
    workdir = os.path.join(self.root, name)
    os.makedirs(workdir, exist_ok=True)
    self.launches += 1
    log = os.path.join(self.root, "logs", f"{self.launches:02d}_{name}.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    self.current = Launch(workdir, log, self.argv(workdir), self.env)
    return self.current

  def run_a(self):
    """The uninterrupted run; measures its start-up marker and save times."""
    launch = self.launch("A")
    rc = _wait(launch, lambda: False, self.timeout)
    if rc != 0:
      raise RuntimeError(f"run A failed (exit {rc}):\n{launch.log_tail()}")
    saves = sorted(last - first for first, last in launch.tmp_seen.values())
    self.a_timing = dict(wall_s=round(launch.elapsed(), 2),
                         marker_s=launch.marker_t,
                         save_s=saves[len(saves) // 2] if saves else None)
    return launch

  # Each aim returns a predicate: true when it is time to kill.

  def _aim_compile(self, launch):
    marker_a = self.a_timing.get("marker_s") or 10.0
    at = float(self.rng.uniform(0.1, 1.0)) * (marker_a + COMPILE_GRACE_S)
    grace = float(self.rng.uniform(0.5, COMPILE_GRACE_S))
    if self.short:        # the one compile kill: while the train step compiles
      at = float("inf")
    return lambda: launch.elapsed() >= at or (
        launch.marker_t is not None and launch.elapsed() >= launch.marker_t + grace)

  def _aim_step(self, launch):
    delay = float(self.rng.uniform(0.0, STEP_DELAY_S))
    skip = int(self.rng.integers(0, 2))     # kill after the first or the second such step
    state = {"seen": 0, "at": None, "last": None}

    def due():
      if state["at"] is None:
        logged, last = launch.logged()
        if logged and last != state["last"]:
          state["last"] = last
          # A step with no save after its log line, once a checkpoint exists
          # (so that the relaunch resumes from one).
          if last % self.ckpt_every and last < self.steps and launch._committed():  # pylint: disable=protected-access
            state["seen"] += 1
            if state["seen"] > skip or last + self.ckpt_every > self.steps:
              state["at"] = launch.elapsed() + delay
      return state["at"] is not None and launch.elapsed() >= state["at"]
    return due

  def _aim_save(self, launch):
    save_a = self.a_timing.get("save_s") or 0.0
    delay = float(self.rng.uniform(0.0, 0.5)) * save_a
    skip = 0 if self.short else int(self.rng.integers(0, 2))   # the first or second save
    state = {"at": None}

    def due():
      if state["at"] is None:
        saves = launch.new_tmp_dirs()      # '<step>.orbax-checkpoint-tmp', one per save
        final = any(n.split(".")[0] == str(self.steps) for n in saves)
        if len(saves) > skip or final:
          state["at"] = launch.elapsed() + delay
      return state["at"] is not None and launch.elapsed() >= state["at"]
    return due

  def kill_once(self, aim):
    """One launch of B killed as `aim` says: a record of the kill, or None if
    the run finished first."""
    launch = self.launch("B")
    due = getattr(self, f"_aim_{aim}")(launch)
    rc = _wait(launch, due, self.timeout)
    if rc is not None:
      if rc != 0:
        raise RuntimeError(f"run B failed by itself (exit {rc}):\n{launch.log_tail()}")
      return None
    killed_at = launch.elapsed()
    launch.kill()
    phase, tmp_left = launch.phase_after_death()
    logged, last = launch.logged()
    committed = launch._committed()  # pylint: disable=protected-access
    record = dict(aim=aim, phase=phase, at_s=round(killed_at, 3),
                  resumed_from=launch.resumed_from,
                  steps_logged=logged, last_logged_step=last,
                  latest_checkpoint=max(committed) if committed else None,
                  marker_s=None if launch.marker_t is None else round(launch.marker_t, 3))
    if tmp_left:
      record["interrupted_save"] = tmp_left
    _log(f"kill {record}")
    return record

  def finish_b(self):
    launch = self.launch("B")
    rc = _wait(launch, lambda: False, self.timeout)
    if rc != 0:
      raise RuntimeError(f"run B failed on its last resume (exit {rc}):\n"
                         f"{launch.log_tail()}")
    return dict(wall_s=round(launch.elapsed(), 2), resumed_from=launch.resumed_from)


# --- comparing checkpoints -------------------------------------------------------

def _child_env(src, devices, jax_cache):
  """The environment of every launch (and of the drill's own checkpoint reads)."""
  env = dict(os.environ)
  xla = [f for f in env.get("XLA_FLAGS", "").split()
         if not f.startswith("--xla_force_host_platform_device_count")]
  env.update(
      XLA_FLAGS=" ".join(xla + [f"--xla_force_host_platform_device_count={devices}"]),
      JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
      JAX_COMPILATION_CACHE_DIR=jax_cache,
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      PYTHONPATH=os.pathsep.join([src] + [p for p in [env.get("PYTHONPATH")] if p]))
  return env


def _snapshot_code(src):
  """Copies gen_synth/ and configs/ to `src`: runs A and B, hours apart in a
  tree others may be editing, must run the same code."""
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
  for name in ("gen_synth", "configs"):
    shutil.copytree(os.path.join(REPO_ROOT, name), os.path.join(src, name), ignore=ignore)


def _load_step(workdir, step):
  """{'generator': {path: array}, 'train': {...}, 'meta': dict} as stored (numpy)."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  import orbax.checkpoint as ocp
  path = os.path.join(workdir, "checkpoints", str(step))
  out = {}
  for item in ("generator", "train"):
    checkpointer = ocp.PyTreeCheckpointer()
    metadata = checkpointer.metadata(os.path.join(path, item)).item_metadata
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
    tree = checkpointer.restore(os.path.join(path, item),
                                args=ocp.args.PyTreeRestore(restore_args=restore_args))
    out[item] = {jax.tree_util.keystr(k): np.asarray(v)
                 for k, v in jax.tree_util.tree_leaves_with_path(tree)}
  out["meta"] = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
      os.path.join(path, "meta"))
  return out


def _steps_of(workdir):
  """The steps a CheckpointManager lists for `workdir`, as training sees them."""
  from gen_synth import checkpointing  # pylint: disable=g-import-not-at-top
  return checkpointing.checkpoint_manager(workdir, max_to_keep=None).all_steps()


def compare(workdir_a, workdir_b, final_step):
  """(steps compared, leaves compared per step, mismatches, final meta of A)."""
  import warnings  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)      # orbax logs every read at INFO
  warnings.filterwarnings("ignore", message="Sharding info not provided")
  steps_a, steps_b = _steps_of(workdir_a), _steps_of(workdir_b)
  mismatches = []
  for name, steps in (("A", steps_a), ("B", steps_b)):
    if final_step not in steps:
      mismatches.append(f"run {name} has no checkpoint of the final step {final_step} "
                        f"(has {sorted(steps)})")
  common = sorted(set(steps_a) & set(steps_b))
  leaves, meta_a = {}, None
  for step in common:
    try:
      a, b = _load_step(workdir_a, step), _load_step(workdir_b, step)
    except Exception as e:  # pylint: disable=broad-except  (a checkpoint that cannot be read)
      mismatches.insert(0, f"step {step}: cannot restore: {type(e).__name__}: {e}")
      continue
    if step == final_step:
      meta_a = a["meta"]
    if a["meta"] != b["meta"]:      # listed first: the summary keeps the first 40
      mismatches.insert(0, f"step {step} meta: A {a['meta']} != B {b['meta']}")
    count = 0
    for item in ("generator", "train"):
      if set(a[item]) != set(b[item]):
        mismatches.append(f"step {step} {item}: leaves differ: "
                          f"{sorted(set(a[item]) ^ set(b[item]))[:10]}")
      for key in sorted(set(a[item]) & set(b[item])):
        x, y = a[item][key], b[item][key]
        count += 1
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
          mismatches.append(f"step {step} {item}{key}: A {x.dtype}{list(x.shape)} != "
                            f"B {y.dtype}{list(y.shape)}")
    leaves[step] = count
  return common, leaves, mismatches, meta_a


# --- main ---------------------------------------------------------------------

def _plan(rng, kills, short):
  if short:
    return list(PHASES)
  plan = list(PHASES[:kills]) + [str(p) for p in rng.choice(PHASES, max(0, kills - 3))]
  rng.shuffle(plan)
  return plan


def main(argv):
  del argv
  t_start = time.monotonic()
  kills = 3 if _SHORT.value else _KILLS.value
  steps = 6 if _SHORT.value else _STEPS.value
  if steps < 2 * _CKPT_EVERY.value:
    raise app.UsageError(f"--steps={steps} leaves too little to kill: use at least "
                         f"{2 * _CKPT_EVERY.value}")
  made_root = _WORKDIR.value is None or not os.path.exists(_WORKDIR.value)
  root = os.path.abspath(_WORKDIR.value or tempfile.mkdtemp(prefix="gen_synth_kill_drill_"))
  os.makedirs(root, exist_ok=True)
  made = ["A", "B", "logs", "src"]
  data_dir = os.path.abspath(_DATA_DIR.value or os.path.join(root, "tfds"))
  jax_cache = os.path.abspath(_JAX_CACHE.value or os.path.join(root, "jax_cache"))
  made += [] if _DATA_DIR.value else ["tfds"]
  made += [] if _JAX_CACHE.value else ["jax_cache"]
  for name in ("A", "B", "src"):
    if os.path.exists(os.path.join(root, name)):
      raise app.UsageError(f"{root}/{name} exists: pass an empty or new --workdir")
  src = os.path.join(root, "src")
  _snapshot_code(src)
  env = _child_env(src, _DEVICES.value, jax_cache)
  # This process reads the checkpoints with the same code and devices.
  for key in ("XLA_FLAGS", "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES", "TF_CPP_MIN_LOG_LEVEL"):
    os.environ[key] = env[key]
  sys.path.insert(0, src)
  drill = Drill(root, src, steps, _CKPT_EVERY.value, data_dir, env, _SEED.value,
                _LAUNCH_TIMEOUT.value, short=_SHORT.value)
  summary = dict(steps=steps, checkpoint_every=_CKPT_EVERY.value, devices=_DEVICES.value,
                 seed=_SEED.value, short=_SHORT.value, workdir=root if _KEEP.value else None)
  records = []
  summary["kills"] = records           # filled as the kills happen (kept on an error)
  ok = False
  try:
    _log(f"run A: {steps} steps uninterrupted, in {root}/A")
    drill.run_a()
    summary["run_a"] = drill.a_timing
    _log(f"run A done: {drill.a_timing}")
    t_b = time.monotonic()
    plan = _plan(drill.rng, kills, _SHORT.value)
    finished_early, extra = False, 0
    while plan:
      aim = plan.pop(0)
      record = drill.kill_once(aim)
      if record is None:
        finished_early = True
        _log(f"run B finished before the kill aimed at {aim!r}")
        break
      records.append(record)
      hit = {r["phase"] for r in records}
      if _SHORT.value and not plan and extra < 3 and set(PHASES) - hit:
        plan.append(sorted(set(PHASES) - hit)[0])     # re-aim at a phase not yet hit
        extra += 1
    if not finished_early:
      summary["last_launch"] = drill.finish_b()
    summary["run_b_wall_s"] = round(time.monotonic() - t_b, 2)
    t_c = time.monotonic()
    common, leaves, mismatches, meta = compare(os.path.join(root, "A"),
                                               os.path.join(root, "B"), steps)
    summary.update(
        finished_before_all_kills=finished_early, steps_compared=common, leaves_compared=leaves.get(steps, 0),
        leaves_compared_all_steps=sum(leaves.values()),
        final_meta=meta, mismatch_count=len(mismatches), mismatches=mismatches[:40],
        compare_wall_s=round(time.monotonic() - t_c, 2))
    missing = [p for p in PHASES if not any(r["phase"] == p for r in records)]
    ok = not mismatches and (not _SHORT.value or not missing)
  except (RuntimeError, TimeoutError) as e:
    summary["error"] = str(e)
    _log(str(e))
  finally:
    drill.stop()
    summary["kills_per_phase"] = {p: sum(r["phase"] == p for r in records) for p in PHASES}
    summary["phases_missing"] = [p for p in PHASES if not summary["kills_per_phase"][p]]
    summary["restarts"] = max(0, drill.launches - 2)
    summary["wall_s"] = round(time.monotonic() - t_start, 2)
    summary["ok"] = ok
    if not _KEEP.value:
      if made_root:
        shutil.rmtree(root, ignore_errors=True)
      else:
        for name in made:
          shutil.rmtree(os.path.join(root, name), ignore_errors=True)
  print(json.dumps(summary, indent=1, sort_keys=True), flush=True)
  return 0 if ok else 1


if __name__ == "__main__":
  app.run(main)
