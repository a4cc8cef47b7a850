"""constraints.txt pins exactly what `pip install -e ".[test]"` installs.

The closure of the install is read from the running environment's metadata
(`importlib.metadata`): gen_synth's requirements with the `test` extra, then
each installed requirement's own requirements (markers and extras evaluated),
recursively. constraints.txt must pin every package of that closure (except
pip, setuptools and wheel, which `pip freeze` leaves out) and nothing else.

The comparison only means something in an environment installed with
`-c constraints.txt`: elsewhere (a pinned version differs from the installed
one) the test skips, saying so, except under CI (`CI=true`), where a
difference fails.
"""

import importlib.metadata
import os
import pathlib
import re

from packaging.requirements import Requirement
import pytest

CONSTRAINTS = pathlib.Path(__file__).resolve().parents[1] / "constraints.txt"
UNPINNED = {"pip", "setuptools", "wheel"}  # `pip freeze` leaves these out.
PROJECT = "gen-synth"


def normalize(name: str) -> str:
  """PEP 503 normalised project name: 'Foo_Bar.baz' -> 'foo-bar-baz'."""
  return re.sub(r"[-_.]+", "-", name).lower()


def read_constraints(path=None) -> dict:
  """{normalised name: version} of the `name==version` lines of a constraints file."""
  pins = {}
  for line in (path or CONSTRAINTS).read_text().splitlines():
    line = line.split("#", 1)[0].strip()
    if not line:
      continue
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*(\S+)", line)
    assert m, f"constraints.txt: {line!r} is not 'name==version'"
    pins[normalize(m.group(1))] = m.group(3)
  return pins


def installed_distributions() -> dict:
  """{normalised name: Distribution} of the running environment."""
  out = {}
  for dist in importlib.metadata.distributions():
    name = dist.metadata["Name"]
    if name:
      out.setdefault(normalize(name), dist)
  return out


def _wanted(req: Requirement, extras) -> bool:
  if req.marker is None:
    return True
  return any(req.marker.evaluate({"extra": e}) for e in ("", *extras))


def install_closure(root: str, extras, installed: dict) -> tuple[set, set]:
  """(closure of installed names, required names that are not installed)."""
  closure, missing = set(), set()
  todo = [(normalize(root), frozenset(extras))]
  seen = set()
  while todo:
    name, wanted_extras = todo.pop()
    if (name, wanted_extras) in seen:
      continue
    seen.add((name, wanted_extras))
    dist = installed.get(name)
    if dist is None:
      missing.add(name)
      continue
    closure.add(name)
    for spec in dist.requires or []:
      req = Requirement(spec)
      if _wanted(req, wanted_extras):
        todo.append((normalize(req.name), frozenset(normalize(e) for e in req.extras)))
  return closure, missing


def _under_ci() -> bool:
  return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def test_constraints_pin_exactly_the_install_closure():
  pins = read_constraints()
  installed = installed_distributions()
  if PROJECT not in installed:
    pytest.fail("gen_synth is not installed: pip install -e '.[test]' -c constraints.txt")
  closure, missing = install_closure(PROJECT, {"test"}, installed)
  closure.discard(PROJECT)
  differ = {n: (pins[n], installed[n].version) for n in sorted(closure & pins.keys())
            if installed[n].version != pins[n]}
  if (differ or missing) and not _under_ci():
    shown = ", ".join(f"{n} {p} pinned, {v} installed" for n, (p, v) in list(differ.items())[:3])
    pytest.skip("this environment was not installed with -c constraints.txt "
                f"({shown or 'missing: ' + ', '.join(sorted(missing))}); CI=true checks it")
  assert not missing, f"required but not installed: {sorted(missing)}"
  assert not differ, f"installed versions differ from constraints.txt: {differ}"
  absent = sorted(n for n in pins if n not in installed)
  assert not absent, (
      f"constraints.txt pins {absent}, which this install does not pull in (not installed): "
      "regenerate it as its header says")
  not_pulled_in = sorted(pins.keys() - closure)
  assert not not_pulled_in, (
      f"constraints.txt pins {not_pulled_in}, installed here but not required by "
      "gen_synth[test]: regenerate it as its header says")
  unpinned = sorted(closure - pins.keys() - UNPINNED)
  assert not unpinned, f"constraints.txt does not pin {unpinned}: regenerate it"


def test_the_closure_walk_sees_a_stray_pin(tmp_path):
  """The check itself: a pin outside the closure (awscli) is reported."""
  stray = tmp_path / "constraints.txt"
  stray.write_text(CONSTRAINTS.read_text() + "awscli==1.45.11\n")
  pins = read_constraints(stray)
  closure, _ = install_closure(PROJECT, {"test"}, installed_distributions())
  assert "awscli" in pins.keys() - closure
  assert {"jax", "flax", "pytest", "pytest-xdist"} <= closure
  assert normalize("ml_collections") == normalize("ML-Collections") == "ml-collections"
