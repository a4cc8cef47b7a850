"""gen_synth.official.safe_pickle: reads torch checkpoints, refuses code, needs no torch.

Every file here is written by the test itself: torch's globals are emitted as
raw GLOBAL opcodes by a small pickle assembler (`enc`, `call`, ...), so
neither torch nor the official repositories are needed. Files in the three
formats are laid out as torch writes them (see the module's docstring); the
real-torch comparison lives outside CI (it needs torch and the official code).
"""

import argparse
import collections
import copy
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest

from gen_synth.official import safe_pickle as sp

# ----------------------------------------------------------------------------
# A tiny pickle assembler (protocol 3 opcodes; GLOBAL spelled out by hand).


class Ops(bytes):
  """Opcodes inserted verbatim by `enc`."""


def glob(module, name):
  return Ops(b"c" + f"{module}\n{name}\n".encode())


def enc(x) -> bytes:
  """Opcodes that push `x` (None, bool, int, float, str, bytes, tuple, list, dict, Ops)."""
  if isinstance(x, Ops):
    return bytes(x)
  if x is None:
    return b"N"
  if isinstance(x, bool):
    return b"\x88" if x else b"\x89"
  if isinstance(x, int):
    if -2**31 <= x < 2**31:
      return b"J" + struct.pack("<i", x)
    data = x.to_bytes((x.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data
  if isinstance(x, float):
    return b"G" + struct.pack(">d", x)
  if isinstance(x, str):
    data = x.encode()
    return b"X" + struct.pack("<I", len(data)) + data
  if isinstance(x, bytes):
    return b"B" + struct.pack("<I", len(x)) + x
  if isinstance(x, tuple):
    return b"(" + b"".join(enc(v) for v in x) + b"t"
  if isinstance(x, list):
    return b"](" + b"".join(enc(v) for v in x) + b"e"
  if isinstance(x, dict):
    return b"}" + setitems_ops(x)
  raise TypeError(type(x))


def setitems_ops(d) -> bytes:
  return b"(" + b"".join(enc(k) + enc(v) for k, v in d.items()) + b"u"


def call(func, *args):
  """REDUCE: func(*args)."""
  return Ops(enc(func) + enc(tuple(args)) + b"R")


def newobj(cls, state=None):
  """NEWOBJ cls.__new__(cls), then BUILD with `state` if given."""
  ops = enc(cls) + b")\x81"
  return Ops(ops if state is None else ops + enc(state) + b"b")


def with_items(obj, d):
  return Ops(enc(obj) + setitems_ops(d))


def persid(pid):
  return Ops(enc(pid) + b"Q")


def dumps(x) -> bytes:
  return b"\x80\x03" + enc(x) + b"."


def odict(d):
  return with_items(call(glob("collections", "OrderedDict")), d)


def tensor(storage, offset, size, stride):
  return call(glob("torch._utils", "_rebuild_tensor_v2"), storage, offset, tuple(size),
              tuple(stride), False, odict({}))


def parameter(t):
  return call(glob("torch._utils", "_rebuild_parameter"), t, True, odict({}))


STORAGE_DTYPES = {"FloatStorage": "<f4", "HalfStorage": "<f2", "LongStorage": "<i8",
                  "BoolStorage": "?", "ByteStorage": "u1", "UntypedStorage": "u1"}


def storage_type(name):
  module = "torch.storage" if name == "UntypedStorage" else "torch"
  return glob(module, name)


def legacy_bytes(obj, storages) -> bytes:
  """A legacy torch.save: storages = {key: (storage class name, 1-D array)}."""
  head = b"".join(pickle.dumps(x, protocol=2) for x in (
      sp.LEGACY_MAGIC_NUMBER, sp.LEGACY_PROTOCOL_VERSION,
      dict(protocol_version=1001, little_endian=True, type_sizes=dict(short=2, int=4, long=4))))
  keys = sorted(storages)
  tail = b"".join(
      len(storages[k][1]).to_bytes(8, "little")
      + np.asarray(storages[k][1], STORAGE_DTYPES[storages[k][0]]).tobytes() for k in keys)
  return head + dumps(obj) + pickle.dumps(keys, protocol=2) + tail


def legacy_storage_pid(name, key, numel, view=None):
  return persid(("storage", storage_type(name), key, "cpu", numel, view))


def embedded_storage(name, array):
  """torch.storage._load_from_bytes(<legacy torch.save of one storage>)."""
  data = legacy_bytes(legacy_storage_pid(name, "0", len(array)), {"0": (name, array)})
  return call(glob("torch.storage", "_load_from_bytes"), data)


def write_zip(path, obj, storages, byteorder="little", prefix="archive"):
  """A torch.save zip archive: storages = {key: raw bytes}."""
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
    archive.writestr(f"{prefix}/data.pkl", dumps(obj))
    archive.writestr(f"{prefix}/byteorder", byteorder)
    for key, data in storages.items():
      archive.writestr(f"{prefix}/data/{key}", data)
    archive.writestr(f"{prefix}/version", "3\n")
  return path


def zip_storage_pid(name, key, numel):
  return persid(("storage", storage_type(name), key, "cpu", numel))


def write(path, data: bytes):
  path.write_bytes(data)
  return path


def strided(array, offset, size, stride):
  """What torch's `set_(storage, offset, size, stride)` shows of a 1-D array."""
  return np.lib.stride_tricks.as_strided(
      array[offset:], size, [s * array.itemsize for s in stride])


BASE = np.arange(60, dtype=np.float32)
HALF = np.linspace(-2, 3, 15).astype(np.float16)
GEOMETRIES = {  # name -> (offset, size, stride) into BASE viewed as [6, 10].
    "contiguous": (0, (6, 10), (10, 1)),
    "transposed": (0, (10, 6), (1, 10)),
    "offset": (23, (4, 4), (10, 1)),
    "strided": (1, (3, 4), (20, 3)),
    "expanded": (5, (4, 3), (0, 1)),
    "scalar": (7, (), ()),
    "empty": (0, (0, 4), (4, 1)),
}


def check_array(got, want):
  assert isinstance(got, np.ndarray) and got.flags.c_contiguous and got.flags.owndata
  assert got.dtype == want.dtype and got.shape == want.shape
  np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------
# Refusals.


class Payload:
  """An object whose unpickling calls `func(*args)`, as an attack file would."""

  def __init__(self, func, *args):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


def touch_code(marker):
  return f"open({str(marker)!r}, 'w').close()"


def payloads(marker):
  """(payload, global name) pairs; the first four would create `marker`."""
  return [
      (Payload(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
      (Payload(eval, touch_code(marker)), "builtins.eval"),
      (Payload(exec, touch_code(marker)), "builtins.exec"),
      (Payload(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
      (Payload(__import__, "os"), "builtins.__import__"),
      (Payload(getattr, str(marker), "upper"), "builtins.getattr"),
  ]


def test_payload_is_live_under_plain_pickle(tmp_path):
  # Control: the payload does run under pickle.loads, so the refusals below mean something.
  marker = tmp_path / "ran"
  pickle.loads(pickle.dumps(Payload(exec, touch_code(marker))))
  assert marker.exists()


@pytest.mark.parametrize("index", range(6))
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_refuses_code_globals(tmp_path, index, protocol):
  marker = tmp_path / "ran"
  payload, name = payloads(marker)[index]
  data = pickle.dumps({"G": [1, payload]}, protocol=protocol, fix_imports=False)
  path = write(tmp_path / "evil.pkl", data)
  with pytest.raises(sp.UnsafePickleError, match=f"refusing to load global '{name}'") as err:
    sp.load(path)
  assert err.value.global_name == name
  assert str(path) in str(err.value) and "never runs code" in str(err.value)
  assert isinstance(err.value, pickle.UnpicklingError)
  assert not marker.exists()


def test_refusal_names_python2_modules_as_python3(tmp_path):
  marker = tmp_path / "ran"
  data = pickle.dumps(Payload(eval, touch_code(marker)), protocol=0)  # '__builtin__ eval'
  assert b"__builtin__" in data
  with pytest.raises(sp.UnsafePickleError, match="'builtins.eval'"):
    sp.load(write(tmp_path / "evil.pkl", data))
  assert not marker.exists()


@pytest.mark.parametrize("module,name", [
    ("importlib", "import_module"), ("builtins", "open"), ("builtins", "compile"),
    ("torch", "load"), ("torch._utils", "_rebuild_qtensor"), ("torch.nn.functional", "relu"),
    ("numpy", "load"), ("numpy.core.multiarray", "frombuffer"), ("trainingX.evil", "run"),
    ("gen_synth.official.safe_pickle", "ModuleRecord"), ("pickle", "loads"),
])
def test_refuses_other_globals(module, name):
  with pytest.raises(sp.UnsafePickleError, match=f"'{module}.{name}'"):
    sp.resolve_global(module, name, "f.pkl")


def test_refuses_payload_in_torch_zip(tmp_path):
  marker = tmp_path / "ran"
  evil = call(glob("posix", "system"), f"touch {marker}")
  obj = {"g": odict({"w": tensor(zip_storage_pid("FloatStorage", "0", 4), 0, (4,), (1,))}),
         "args": evil}
  path = write_zip(tmp_path / "evil.pt", obj, {"0": np.zeros(4, "<f4").tobytes()})
  with pytest.raises(sp.UnsafePickleError, match="'posix.system'"):
    sp.load(path)
  assert not marker.exists()


def test_refuses_payload_in_persistent_state(tmp_path):
  marker = tmp_path / "ran"
  meta = dict(type="class", version=6, module_src="class G: pass\n", class_name="G",
              state={"training": False, "hook": call(glob("os", "system"), f"touch {marker}")})
  obj = {"G": call(glob("torch_utils.persistence", "_reconstruct_persistent_obj"), meta)}
  with pytest.raises(sp.UnsafePickleError, match="'os.system'"):
    sp.load(write(tmp_path / "evil.pkl", dumps(obj)))
  assert not marker.exists()


def test_refuses_payload_in_embedded_storage_bytes(tmp_path):
  marker = tmp_path / "ran"
  inner = legacy_bytes(call(glob("builtins", "exec"), touch_code(marker)), {})
  obj = {"w": tensor(call(glob("torch.storage", "_load_from_bytes"), inner), 0, (1,), (1,))}
  path = write(tmp_path / "evil.pkl", dumps(obj))
  with pytest.raises(sp.UnsafePickleError, match=r"'builtins.exec' from .*embedded storage"):
    sp.load(path)
  assert not marker.exists()


def test_refuses_payload_in_legacy_file(tmp_path):
  marker = tmp_path / "ran"
  obj = [legacy_storage_pid("FloatStorage", "0", 2),
         call(glob("subprocess", "Popen"), ["touch", str(marker)])]
  path = write(tmp_path / "evil.pt", legacy_bytes(obj, {"0": ("FloatStorage", [1, 2])}))
  with pytest.raises(sp.UnsafePickleError, match="'subprocess.Popen'"):
    sp.load(path)
  assert not marker.exists()


def test_module_source_is_never_run(tmp_path):
  marker = tmp_path / "ran"
  src = f"import os\nos.system('touch {marker}')\nclass G:\n  pass\n"
  meta = dict(type="class", version=6, module_src=src, class_name="G", state={"x": 1})
  obj = call(glob("torch_utils.persistence", "_reconstruct_persistent_obj"), meta)
  record = sp.load(write(tmp_path / "g.pkl", dumps(obj))).contents
  assert record.module_src == src and record.state == {"x": 1}
  assert not marker.exists()


@pytest.mark.parametrize("obj,match", [
    # Out-of-bounds views would read memory past the storage.
    (tensor(embedded_storage("FloatStorage", [1, 2, 3]), 1, (3,), (1,)), "past its storage"),
    (tensor(embedded_storage("FloatStorage", [1, 2, 3]), 0, (2, 2), (2, 1)), "past its storage"),
    (tensor(embedded_storage("FloatStorage", [1, 2, 3]), 0, (2,), (-1,)), "non-negative"),
    # Stand-ins for module classes cannot be called with arguments.
    (call(glob("training.networks", "Generator"), "x"), "not called with arguments"),
    # _rebuild_from_type_v2 only wraps tensor rebuilders.
    (call(glob("torch._tensor", "_rebuild_from_type_v2"), glob("builtins", "set"),
          glob("torch", "Tensor"), ([1],), {}), "_rebuild_from_type"),
    # BUILD cannot re-point a shared stand-in.
    (Ops(enc(glob("torch._utils", "_rebuild_tensor_v2")) + enc((None, {"fn": 1})) + b"b"),
     "immutable"),
    (Ops(enc(glob("torch._utils", "_rebuild_tensor_v2")) + enc({"fn": 1}) + b"b"), "__dict__"),
    (Ops(enc(glob("training.networks", "Generator")) + enc((None, {"__new__": 1})) + b"b"),
     "immutable"),
    (Ops(enc(glob("torch", "FloatStorage")) + enc((None, {"dtype": "int64"})) + b"b"),
     "immutable"),
    # numpy's reconstructor only makes empty ndarrays.
    (call(glob("numpy.core.multiarray", "_reconstruct"), glob("builtins", "set"), (0,), b"b"),
     "_reconstruct"),
    (persid(("storage", 1)), "persistent id"),
], ids=["past_end", "past_end_2d", "negative_stride", "module_called", "rebuild_from_type",
        "build_slots", "build_dict", "build_class", "build_storage_type", "np_reconstruct",
        "persistent_id"])
def test_refuses_malformed(tmp_path, obj, match):
  with pytest.raises(pickle.UnpicklingError, match=match):
    sp.load(write(tmp_path / "bad.pkl", dumps(obj)))
  # The shared stand-ins are untouched: a normal file still reads.
  good = tensor(embedded_storage("FloatStorage", [1, 2]), 0, (2,), (1,))
  check_array(sp.load(write(tmp_path / "good.pkl", dumps(good))).contents,
              np.array([1, 2], np.float32))


def test_never_imports_torch(tmp_path):
  obj = {"w": parameter(tensor(embedded_storage("HalfStorage", HALF), 0, (15,), (1,)))}
  path = write(tmp_path / "g.pkl", dumps(obj))
  code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` would now fail
          "from gen_synth.official import safe_pickle as sp\n"
          f"w = sp.load({str(path)!r}).contents['w']\n"
          "assert w.dtype == 'float16' and w.shape == (15,), w\n"
          "assert not any(m.startswith('torch') for m in sys.modules if sys.modules[m])\n")
  subprocess.run([sys.executable, "-c", code], check=True,
                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ----------------------------------------------------------------------------
# Reading.


def test_detect_format():
  assert sp.detect_format(b"PK\x03\x04rest") == "torch_zip"
  assert sp.detect_format(legacy_bytes(None, {})[:64]) == "torch_legacy"
  assert sp.detect_format(pickle.dumps(sp.LEGACY_MAGIC_NUMBER, protocol=0)) == "torch_legacy"
  assert sp.detect_format(pickle.dumps({"G": 1}, protocol=4)) == "persistence_pickle"
  assert sp.detect_format(pickle.dumps(sp.LEGACY_MAGIC_NUMBER + 1)) == "persistence_pickle"


def test_torch_zip_tensors(tmp_path):
  bf16 = np.array([1.5, -2.25, 3e-3, 7e4], ml_dtypes.bfloat16)
  state = {name: tensor(zip_storage_pid("FloatStorage", "0", 60), *geometry)
           for name, geometry in GEOMETRIES.items()}
  state["half"] = parameter(tensor(zip_storage_pid("HalfStorage", "1", 15), 3, (3, 4), (1, 3)))
  state["long"] = tensor(zip_storage_pid("LongStorage", "2", 3), 0, (3,), (1,))
  state["bool"] = tensor(zip_storage_pid("BoolStorage", "3", 3), 0, (3,), (1,))
  state["bf16"] = call(  # torch >= 2.3 writes new dtypes as (untyped bytes, dtype).
      glob("torch._utils", "_rebuild_tensor_v3"), zip_storage_pid("UntypedStorage", "4", 8),
      1, (2,), (2,), False, odict({}), glob("torch", "bfloat16"))
  state["subclass"] = call(
      glob("torch._tensor", "_rebuild_from_type_v2"), glob("torch._utils", "_rebuild_tensor_v2"),
      glob("torch", "Tensor"), (zip_storage_pid("FloatStorage", "0", 60), 2, (2,), (1,), False,
                                odict({})), {"note": "x"})
  storages = {"0": BASE.tobytes(), "1": HALF.tobytes(), "2": np.array([-1, 2**40, 3]).tobytes(),
              "3": np.array([True, False, True]).tobytes(), "4": bf16.tobytes()}
  loaded = sp.load(write_zip(tmp_path / "g.pt", {"g_ema": odict(state)}, storages))
  assert loaded.format == "torch_zip"
  got = loaded.contents["g_ema"]
  assert isinstance(got, collections.OrderedDict) and list(got) == list(state)
  for name, geometry in GEOMETRIES.items():
    check_array(got[name], strided(BASE, *geometry))
  check_array(got["half"], strided(HALF, 3, (3, 4), (1, 3)))
  check_array(got["long"], np.array([-1, 2**40, 3], np.int64))
  check_array(got["bool"], np.array([True, False, True]))
  check_array(got["bf16"], bf16[[1, 3]])
  check_array(got["subclass"], BASE[2:4])


def test_torch_zip_big_endian(tmp_path):
  obj = [tensor(zip_storage_pid("FloatStorage", "0", 60), 0, (10, 6), (1, 10)),
         tensor(zip_storage_pid("HalfStorage", "1", 15), 0, (15,), (1,))]
  storages = {"0": BASE.astype(">f4").tobytes(), "1": HALF.astype(">f2").tobytes()}
  got = sp.load(write_zip(tmp_path / "g.pt", obj, storages, byteorder="big")).contents
  check_array(got[0], BASE.reshape(6, 10).T)
  check_array(got[1], HALF)


def test_torch_zip_optimizer_and_args(tmp_path):
  step = tensor(zip_storage_pid("FloatStorage", "0", 1), 0, (), ())
  namespace = newobj(glob("argparse", "Namespace"), {"size": 256, "lr": 0.002})
  obj = {"g_optim": {"state": {0: {"step": step}},
                     "param_groups": [{"lr": 0.002, "betas": (0.0, 0.99), "params": [0]}]},
         "args": namespace, "device": call(glob("torch", "device"), "cuda", 0),
         "size": call(glob("torch", "Size"), [2, 3]), "dtype": glob("torch", "float16")}
  got = sp.load(write_zip(tmp_path / "c.pt", obj, {"0": np.float32(7).tobytes()})).contents
  check_array(got["g_optim"]["state"][0]["step"], np.array(7, np.float32))
  assert got["g_optim"]["param_groups"] == [{"lr": 0.002, "betas": (0.0, 0.99), "params": [0]}]
  assert vars(got["args"]) == {"size": 256, "lr": 0.002}
  assert got["device"] == "cuda:0" and got["size"] == (2, 3)
  assert sp.numpy_dtype(got["dtype"].name) == np.float16


def test_legacy_file(tmp_path):
  root = np.arange(12, dtype=np.float32)
  view = legacy_storage_pid("FloatStorage", "1", 12, ("7", 4, 6))  # root[4:10]
  linear = persid(("module", glob("torch.nn.modules.linear", "Linear"), "linear.py", "src"))
  module = Ops(enc(linear) + b")\x81" + enc({
      "_parameters": odict({"weight": parameter(tensor(view, 1, (2, 2), (1, 2))),
                            "bias": None}),
      "_buffers": odict({}), "_modules": odict({}), "in_features": 2}) + b"b")
  obj = {"linear": module,
         "half": tensor(legacy_storage_pid("HalfStorage", "0", 15), 0, (5, 3), (3, 1)),
         "root": tensor(legacy_storage_pid("FloatStorage", "1", 12), 0, (12,), (1,))}
  data = legacy_bytes(obj, {"0": ("HalfStorage", HALF), "1": ("FloatStorage", root)})
  loaded = sp.load(write(tmp_path / "old.pt", data))
  assert loaded.format == "torch_legacy"
  got = loaded.contents
  check_array(got["half"], HALF.reshape(5, 3))
  check_array(got["root"], root)
  assert got["linear"].class_name == "torch.nn.modules.linear.Linear"
  assert not got["linear"].persistent and sp.init_kwargs(got["linear"]) == {}
  assert got["linear"].state["in_features"] == 2
  assert list(sp.module_state_dict(got["linear"])) == ["weight"]
  check_array(sp.module_state_dict(got["linear"])["weight"], root[[[5, 7], [6, 8]]])


def test_persistence_pickle_module_tree(tmp_path):
  def module_state(params, buffers=None, modules=None, **attrs):
    return {"training": False, "_parameters": odict(params), "_buffers": odict(buffers or {}),
            "_non_persistent_buffers_set": call(glob("builtins", "set"), ["tmp"]),
            "_modules": odict(modules or {}), **attrs}

  def persistent(class_name, state, **kwargs):
    kwargs = with_items(newobj(glob("dnnlib.util", "EasyDict")), kwargs)
    meta = dict(type="class", version=6, module_src=f"class {class_name}: pass\n",
                class_name=class_name, state={**state, "_init_kwargs": kwargs,
                                              "_init_args": ()})
    return call(glob("torch_utils.persistence", "_reconstruct_persistent_obj"), meta)

  def weight(*geometry):
    return parameter(tensor(embedded_storage("FloatStorage", BASE), *geometry))

  fc = persistent("FullyConnectedLayer", module_state(
      {"weight": weight(*GEOMETRIES["transposed"]), "bias": weight(5, (3,), (1,))}),
      in_features=6, out_features=10)
  by_reference = newobj(glob("training.networks_creps", "SynthesisInput"), module_state(
      {"weight": weight(*GEOMETRIES["offset"])},
      {"freqs": tensor(embedded_storage("HalfStorage", HALF), 2, (2, 2), (1, 4)),
       "tmp": tensor(embedded_storage("FloatStorage", [1.0]), 0, (1,), (1,))},
      {"affine": fc}))
  protocol0 = call(glob("copy_reg", "_reconstructor"),
                   glob("torch.nn.modules.container", "Sequential"),
                   glob("__builtin__", "object"), None)
  sequential = Ops(enc(protocol0) + enc(module_state({}, modules={"0": fc, "1": None})) + b"b")
  generator = persistent("Generator", module_state(
      {"const": weight(*GEOMETRIES["strided"]), "unused": None},
      {"avg": tensor(embedded_storage("LongStorage", [3, 4]), 1, (1,), (1,))},
      {"input": by_reference, "layers": sequential, "missing": None}, w_dim=64),
      z_dim=64, mapping_kwargs=with_items(newobj(glob("dnnlib.util", "EasyDict")),
                                          {"num_layers": 2}))
  snapshot = {"G_ema": generator, "augment_pipe": None,
              "training_set_kwargs": {"resolution": 256, "xflip": True}}
  loaded = sp.load(write(tmp_path / "network-snapshot.pkl", dumps(snapshot)))
  assert loaded.format == "persistence_pickle"
  G = loaded.contents["G_ema"]
  assert G.class_name == "Generator" and G.persistent and G.version == 6
  assert G.module_src == "class Generator: pass\n" and G.state["w_dim"] == 64
  assert sp.init_kwargs(G) == {"z_dim": 64, "mapping_kwargs": {"num_layers": 2}}
  assert type(sp.init_kwargs(G)["mapping_kwargs"]) is dict
  assert G.state["_modules"]["input"].class_name == "training.networks_creps.SynthesisInput"
  assert G.state["_modules"]["layers"].class_name == "torch.nn.modules.container.Sequential"
  state = sp.module_state_dict(G)
  assert list(state) == [
      "const", "avg", "input.weight", "input.freqs", "input.affine.weight", "input.affine.bias",
      "layers.0.weight", "layers.0.bias"]
  check_array(state["const"], strided(BASE, *GEOMETRIES["strided"]))
  check_array(state["avg"], np.array([4], np.int64))
  check_array(state["input.weight"], strided(BASE, *GEOMETRIES["offset"]))
  check_array(state["input.freqs"], strided(HALF, 2, (2, 2), (1, 4)))
  check_array(state["input.affine.weight"], BASE.reshape(6, 10).T)
  check_array(state["layers.0.bias"], BASE[5:8])
  check_array(state["layers.0.weight"], state["input.affine.weight"])
  assert loaded.contents["training_set_kwargs"] == {"resolution": 256, "xflip": True}
  assert sp.module_state_dict(G, prefix="G.").popitem(last=False)[0] == "G.const"
  clone = copy.deepcopy(G)
  assert clone.class_name == "Generator" and list(sp.module_state_dict(clone)) == list(state)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_containers_and_numpy(tmp_path, protocol):
  # Written by the real pickler: numpy's and Python's own reducers at every protocol.
  obj = {"array": np.arange(6.0).reshape(2, 3).T, "scalar": np.float32(1.5),
         "int": np.int64(-3), "record": np.zeros(2, [("a", "<f4"), ("b", "<i2")]),
         "objects": np.array([1, "x"], dtype=object), "dtype": np.dtype(">i4"),
         "od": collections.OrderedDict(b=1, a=2), "set": {1, 2}, "frozenset": frozenset("ab"),
         "complex": 1 + 2j, "bytes": b"\x00\xff", "empty": b"", "bytearray": bytearray(b"\x01"),
         "args": argparse.Namespace(lr=0.1, size=256), "nested": [(1, "a"), {"x": None}]}
  got = sp.load(write(tmp_path / "p.pkl", pickle.dumps(obj, protocol=protocol))).contents
  assert list(got) == list(obj)
  for key, want in obj.items():
    if isinstance(want, np.ndarray):
      assert got[key].dtype == want.dtype and np.array_equal(got[key], want)
    elif isinstance(want, argparse.Namespace):
      assert vars(got[key]) == vars(want)
    else:
      assert type(got[key]) is type(want) and got[key] == want, key
  assert list(got["od"]) == ["b", "a"]
  got["dtype"].newbyteorder()  # a private copy, not numpy's cached dtype
  assert np.dtype(">i4").byteorder == ">"


def test_module_record_repr_and_defaults():
  record = sp.ModuleRecord("torch.nn.modules.linear.Linear")
  assert record.state == {} and not record.persistent and sp.init_kwargs(record) == {}
  assert "module_src" not in repr(record) and "Linear" in repr(record)
  assert sp.module_state_dict(record) == collections.OrderedDict()
  with pytest.raises(pickle.UnpicklingError):
    sp.module_state_dict(sp.ModuleRecord("M", state={"_modules": {"x": np.zeros(1)}}))
