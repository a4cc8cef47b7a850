"""Test helpers: config loading by file name."""

import importlib.util
import pathlib

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"


def load_config(name: str, arg: str = None):
  spec = importlib.util.spec_from_file_location(name[:-3], CONFIG_DIR / name)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)
