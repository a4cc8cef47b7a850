"""gen_synth.host_memory: XLA:CPU's freed buffers are reused instead of faulted in again."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from gen_synth import host_memory

REPO = pathlib.Path(__file__).resolve().parents[1]

# A jitted function with a [4096, 16384] f32 temporary (256 MiB), called 5
# times in a fresh process: the minor page faults of calls 3-5 (each call's
# buffers are freed by the time the next starts; the heap may still grow once
# in call 2, when small allocations have split the block call 1 freed).
_FAULTS = r"""
import json, resource, sys
from gen_synth import host_memory
kept = host_memory.configure(sys.argv[1])
import jax, jax.numpy as jnp
f = jax.jit(lambda x, w: jnp.sum(jnp.tanh(x @ w) @ w.T))
x = jnp.ones((4096, 64)) / 64
w = jnp.ones((64, 16384)) / 64
for _ in range(2):
  jax.block_until_ready(f(x, w))
faults = []
for _ in range(3):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  jax.block_until_ready(f(x, w))
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""
_TEMP_PAGES = 4096 * 16384 * 4 // 4096


def _faults_per_call(mode):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  out = subprocess.run([sys.executable, "-c", _FAULTS, mode], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_cpu_backend_expected_from_the_named_platform_then_the_plugins():
  assert host_memory.cpu_backend_expected("cpu", accelerator=True)
  assert host_memory.cpu_backend_expected("cpu,cuda", accelerator=True)
  assert not host_memory.cpu_backend_expected("cuda,cpu", accelerator=False)
  assert not host_memory.cpu_backend_expected("tpu", accelerator=False)
  assert host_memory.cpu_backend_expected("", accelerator=False)
  assert not host_memory.cpu_backend_expected("", accelerator=True)


def test_configure_leaves_a_started_jax_and_the_system_mode_alone():
  jax.devices()                          # this process's JAX has started
  assert host_memory.jax_started()
  assert not host_memory.configure("keep")
  assert not host_memory.configure("system")
  assert host_memory.keep_freed_memory.cache_info().currsize == 0   # mallopt never called
  with pytest.raises(ValueError, match="host memory mode"):
    host_memory.configure("always")


@pytest.mark.skipif(not host_memory.is_glibc(), reason="glibc's malloc options only")
def test_kept_memory_is_reused_without_page_faults():
  kept = _faults_per_call("keep")
  system = _faults_per_call("system")
  assert kept["kept"] and not system["kept"]
  # Measured (2-core AMD EPYC): kept 0-3 per call; glibc's defaults 65,537-68,755
  # per call (the 256 MiB faulted in again; fewer where transparent huge
  # pages are always on).
  assert max(kept["faults"]) < 0.05 * _TEMP_PAGES, (kept, system)
  assert min(system["faults"]) > max(kept["faults"]), (kept, system)


@pytest.mark.skipif(not host_memory.is_glibc(), reason="glibc's malloc options only")
def test_commands_keep_freed_memory_before_jax_starts():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "gen_synth.summary",
                        "--config=configs/creps_ffhq.py:tiny", "-v", "1"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert "host memory: freed blocks kept for reuse" in out.stderr, out.stderr[-2000:]


def test_huge_pages_environ_only_where_it_changes_something(tmp_path):
  tunable, mark = host_memory.HUGE_PAGES_TUNABLE, host_memory.REEXEC_MARK
  env = host_memory.huge_pages_environ({"HOME": "/h"}, "madvise", (2, 36))
  assert env == {"HOME": "/h", "GLIBC_TUNABLES": tunable, mark: "1"}
  env = host_memory.huge_pages_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
                                       "madvise", (2, 35))
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:" + tunable
  for thp in ("always", "never", ""):          # already huge pages / refused / no THP
    assert host_memory.huge_pages_environ({}, thp, (2, 36)) is None
  for glibc in ((2, 34), ()):                  # no hugetlb tunable / not glibc
    assert host_memory.huge_pages_environ({}, "madvise", glibc) is None
  assert host_memory.huge_pages_environ(      # the user's choice wins
      {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", (2, 36)) is None
  assert host_memory.huge_pages_environ({mark: "1"}, "madvise", (2, 36)) is None  # run again once
  assert host_memory.mode_in_argv(["--config=c.py", "--host_memory=system"]) == "system"
  assert host_memory.mode_in_argv(["--host_memory", "keep", "-v", "1"]) == "keep"
  assert host_memory.mode_in_argv(["--config=c.py"]) == "auto"
  enabled = tmp_path / "enabled"
  enabled.write_text("always [madvise] never\n")
  assert host_memory.transparent_huge_pages_mode(str(enabled)) == "madvise"
  assert host_memory.transparent_huge_pages_mode(str(tmp_path / "absent")) == ""


_REPORT_ENV = r"""
import json, os
from gen_synth import cli
cli.run(lambda argv: print(json.dumps({"pid": os.getpid(),
                                       "tunables": os.environ.get("GLIBC_TUNABLES")})))
"""


def _run_reporting_env(*flags, **env_extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", **env_extra)
  if "GLIBC_TUNABLES" not in env_extra:
    env.pop("GLIBC_TUNABLES", None)
  env.pop(host_memory.REEXEC_MARK, None)
  proc = subprocess.Popen([sys.executable, "-c", _REPORT_ENV, *flags], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  return proc.pid, json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not host_memory.is_glibc(), reason="glibc's malloc options only")
def test_commands_run_again_with_the_heap_in_huge_pages_as_the_same_process():
  clean = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  applies = host_memory.huge_pages_environ(clean) is not None   # this machine's kernel and glibc
  pid, seen = _run_reporting_env("--host_memory=keep")
  assert seen["pid"] == pid                     # execve: the process the caller started
  assert seen["tunables"] == (host_memory.HUGE_PAGES_TUNABLE if applies else None)
  _, seen = _run_reporting_env("--host_memory=system")
  assert seen["tunables"] is None               # freed memory not kept: left alone
  _, seen = _run_reporting_env("--host_memory=keep", GLIBC_TUNABLES="glibc.malloc.hugetlb=0")
  assert seen["tunables"] == "glibc.malloc.hugetlb=0"
