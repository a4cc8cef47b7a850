"""Shared pytest set-up.

XLA_FLAGS is set before jax is imported so that sharding code really runs on 8
virtual CPU devices, as on a TPU/GPU host. Flags a caller already set are kept
(e.g. XLA_FLAGS=--xla_cpu_enable_fast_math=false, to check that the suite holds
under other code generation), and so is a device count the caller chose.
"""

import os
import pathlib

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Real images for tests and evaluation only (never committed): ../shared/data.
SHARED_DIR = pathlib.Path(os.environ.get("GEN_SYNTH_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture
def shared_data_dir():
  """`../shared/data`, or a clean skip where it is absent (a user's machine)."""
  path = SHARED_DIR / "data"
  if not (path / "celeba_align_6000.zip").exists():
    pytest.skip(f"real images not available at {path}")
  return path


def pytest_configure(config):
  """Persistent XLA compilation cache: identical train steps compile once per run."""
  del config
  import jax  # pylint: disable=g-import-not-at-top
  cache = os.environ.get("GEN_SYNTH_TEST_JAX_CACHE", "/tmp/gen_synth_test_jax_cache")
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
