r"""Peak memory and time of any-scale CREPS generation on this CPU (random init).

Every measurement runs in its own subprocess (so peak RSS is that run's alone,
read from the child's `getrusage(RUSAGE_SELF).ru_maxrss`), one after another.

  # single-shot 1024^2 and 4096^2, streamed tiled 8192^2 and 16384^2 (res=256 preset)
  python experiments/anyscale_benchmark.py --jobs=single:1024,single:4096,stream:8192,stream:16384
  # largest single-shot size under a 24 GiB address-space limit (RLIMIT_AS)
  python experiments/anyscale_benchmark.py --jobs=probe --limit_gib=24
  # scale consistency (Table 3 protocol) for both coordinate conventions
  python experiments/anyscale_benchmark.py --jobs=consistency:256:8,consistency:32:64 

Job syntax: single:N | stream:N[:TILE[:MAX_TILE_ROWS]] | probe | estimate:N |
consistency:R:NUM_IMAGES[:CONFIG_ARG]. stream:16384:1024:2 renders only the first 2 of
16 tile-rows (peak memory is the full run's; time is extrapolated).
Recorded output: experiments/anyscale/README.md.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _peak_rss_mib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _load(config_arg="res=256"):
  sys.path.insert(0, REPO)
  from configs import creps_ffhq  # pylint: disable=g-import-not-at-top
  from gen_synth import sampling  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  model, variables, _, _ = sampling.load_generator(config=creps_ffhq.get_config(config_arg))
  ws = sampling.map_latents(model, variables, sampling.seed_latents([0], model.z_dim))
  ws.block_until_ready()
  return model, variables, ws, time.time() - t0


def child_single(size):
  import jax  # pylint: disable=g-import-not-at-top
  from gen_synth import sampling  # pylint: disable=g-import-not-at-top
  model, variables, ws, load_s = _load()
  rows = sampling.pixel_coords(model, range(size), size)
  fn = jax.jit(lambda v, w, r, c: model.apply(v, w, r, c, method="synthesis"))
  t0 = time.time()
  compiled = fn.lower(variables, ws, rows, rows).compile()
  compile_s = time.time() - t0
  mem = compiled.memory_analysis()
  t0 = time.time()
  img = compiled(variables, ws, rows, rows).block_until_ready()
  run_s = time.time() - t0
  assert img.shape == (1, size, size, 3)
  return dict(job=f"single:{size}", load_s=round(load_s, 1), compile_s=round(compile_s, 1),
              run_s=round(run_s, 1), xla_temp_mib=round(mem.temp_size_in_bytes / 2**20),
              peak_rss_mib=round(_peak_rss_mib()))


def child_stream(size, tile, max_tile_rows=None):
  """Streams a size^2 PNG; with max_tile_rows, only its first tile-rows (time extrapolated).

  Memory is the same for every tile-row, so a partial run shows the full run's
  peak RSS; its time per tile-row (after the first, which compiles) gives the
  estimate of the full run.
  """
  from gen_synth import anyscale  # pylint: disable=g-import-not-at-top
  model, variables, ws, load_s = _load()
  n_rows = -(-size // tile)
  with tempfile.TemporaryDirectory(dir=os.environ.get("ANYSCALE_TMP")) as tmp:
    path = os.path.join(tmp, "out.png")
    t0 = time.time()
    if not max_tile_rows or max_tile_rows >= n_rows:
      anyscale.stream_render(model, variables, ws, path, size, size, tile=tile, progress=True)
      times = None
    else:
      writer = anyscale.PngStreamWriter(path, size, size)
      times, t_prev = [], t0
      for k, (_, block) in enumerate(anyscale.iter_tile_rows(model, variables, ws, size, size,
                                                             tile, dtype=np.uint8,
                                                             progress=True)):
        writer.write_rows(block[0])
        times.append(time.time() - t_prev)
        t_prev = time.time()
        if k + 1 == max_tile_rows:
          break
    run_s = time.time() - t0
    png_mib = os.path.getsize(path) / 2**20
  out = dict(job=f"stream:{size}:{tile}", load_s=round(load_s, 1), run_s=round(run_s, 1),
             png_mib=round(png_mib, 1), peak_rss_mib=round(_peak_rss_mib()))
  if times:
    # One tile-row only: its time (compilation included) times the rows, an upper bound.
    steady = sum(times[1:]) / (len(times) - 1) if len(times) > 1 else times[0]
    out.update(tile_rows_done=f"{len(times)}/{n_rows}",
               tile_row_s=[round(t, 1) for t in times],
               estimated_full_run_s=round(times[0] + steady * (n_rows - 1)))
  return out


def child_estimate(size):
  """XLA's own buffer plan for a single-shot render (compile only, nothing allocated)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  model, variables, ws, _ = _load()
  rows = jax.ShapeDtypeStruct((size,), jnp.float32)
  fn = jax.jit(lambda v, w, r, c: model.apply(v, w, r, c, method="synthesis"))
  mem = fn.lower(variables, ws, rows, rows).compile().memory_analysis()
  total = mem.temp_size_in_bytes + mem.output_size_in_bytes + mem.argument_size_in_bytes
  return dict(job=f"estimate:{size}", xla_total_mib=round(total / 2**20),
              peak_rss_mib=round(_peak_rss_mib()))


def child_consistency(resolution, num_images, config_arg):
  from gen_synth.evaluation import scale_consistency as sc  # pylint: disable=g-import-not-at-top
  model, variables, _, _ = _load(config_arg)
  out = []
  for convention in ("linspace", "center"):
    for method in ("box", "point"):
      t0 = time.time()
      r = sc.scale_consistency(model, variables, num_images=num_images, resolution=resolution,
                               batch_size=4, coord_convention=convention, method=method)
      r.update(config=config_arg, seconds=round(time.time() - t0, 1))
      out.append(r)
  return dict(job=f"consistency:{resolution}:{num_images}:{config_arg}", results=out,
              peak_rss_mib=round(_peak_rss_mib()))


def _available_gib():
  """MemAvailable of /proc/meminfo in GiB (inf where there is none)."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) / 2**20
  except OSError:
    pass
  return float("inf")


def run_child(args, limit_gib=None, timeout=None):
  """Runs this script with --child=ARGS in a subprocess; returns its JSON (or the failure).

  RLIMIT_AS is capped at MemAvailable + 1 GiB (address space runs ~1.5 GiB above
  RSS): on a machine shared with other jobs a larger limit does not stop the
  kernel's OOM killer (a 3328^2 probe under a 20 GiB limit was OOM-killed at
  17 GiB RSS while other jobs held 7 GiB).
  """
  if limit_gib:
    limit_gib = round(min(limit_gib, _available_gib() + 1.0), 1)

  def limit():
    if limit_gib:
      n = int(limit_gib * 2**30)
      resource.setrlimit(resource.RLIMIT_AS, (n, n))
  cmd = [sys.executable, os.path.abspath(__file__), f"--child={args}"]
  t0 = time.time()
  proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit,
                        timeout=timeout, cwd=REPO, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode == 0 and lines:
    result = json.loads(lines[-1])
  else:
    tail = proc.stderr.strip().splitlines()[-3:]
    result = dict(job=args, failed=True, returncode=proc.returncode, stderr_tail=tail)
  result["wall_s"] = round(time.time() - t0, 1)
  if limit_gib:
    result["rlimit_as_gib"] = limit_gib
  return result


def probe(limit_gib, sizes=(3072, 3584, 3712, 3840, 3904, 4096)):
  """Largest single-shot size: XLA's plan first (cheap), then real runs under RLIMIT_AS.

  Sizes whose plan alone exceeds the limit are not run. The others run for real
  in increasing order until one fails (refused by RLIMIT_AS: a clean
  RESOURCE_EXHAUSTED, nothing killed); the last that ran is the answer.
  """
  results = []
  estimates = {s: run_child(f"estimate:{s}", limit_gib) for s in sizes}
  for s in sizes:
    print(json.dumps(estimates[s]), flush=True)
  candidates = [s for s in sizes if estimates[s].get("xla_total_mib", 1e12) < limit_gib * 1024]
  for s in candidates:
    r = run_child(f"single:{s}", limit_gib)
    print(json.dumps(r), flush=True)
    results.append(r)
    if r.get("failed"):
      break
  ran = [r["job"] for r in results if not r.get("failed")]
  print(json.dumps(dict(job="probe", largest_single_shot=ran[-1] if ran else None)), flush=True)
  return results


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--jobs", default="single:1024,single:4096,stream:8192,stream:16384")
  parser.add_argument("--limit_gib", type=float, default=24.0)
  parser.add_argument("--child", default=None)
  args = parser.parse_args()
  if args.child:
    kind, *rest = args.child.split(":")
    if kind == "single":
      out = child_single(int(rest[0]))
    elif kind == "stream":
      out = child_stream(int(rest[0]), int(rest[1]) if len(rest) > 1 else 1024,
                         int(rest[2]) if len(rest) > 2 else None)
    elif kind == "estimate":
      out = child_estimate(int(rest[0]))
    elif kind == "consistency":
      out = child_consistency(int(rest[0]), int(rest[1]), rest[2] if len(rest) > 2 else "res=256")
    else:
      raise ValueError(args.child)
    print(json.dumps(out), flush=True)
    return
  for job in args.jobs.split(","):
    if job == "probe":
      probe(args.limit_gib)
    else:
      print(json.dumps(run_child(job, args.limit_gib)), flush=True)


if __name__ == "__main__":
  main()
