"""Reads official PyTorch checkpoints without torch and without running their code.

Three formats are read (`load` detects which from the first bytes):

* "persistence_pickle": a plain `pickle.dump` of StyleGAN3-style networks, as
  CREPS' training loop writes them (`dict(G=..., D=..., G_ema=...,
  augment_pipe=..., training_set_kwargs=...)`). Their classes are decorated by
  `torch_utils.persistence.persistent_class`, which pickles each module as
  `_reconstruct_persistent_obj(meta)` with meta = dict(type='class', version,
  module_src=<the Python source of its file>, class_name, state=<__dict__>).
  Tensors inside are `torch._utils._rebuild_tensor_v2(storage, ...)` and each
  storage is `torch.storage._load_from_bytes(b)`, b being a legacy-format
  `torch.save` of that storage.
* "torch_zip": a `torch.save` zip archive (PyTorch >= 1.6; PixelFolder and CIPS
  checkpoints): `<name>/data.pkl` whose persistent ids
  ('storage', storage_type, key, location, numel) name the raw storages
  `<name>/data/<key>` (little-endian unless `<name>/byteorder` says "big").
* "torch_legacy": a pre-1.6 `torch.save` file: pickles of the magic number,
  the protocol version and sys_info, the main pickle (persistent ids
  ('storage', storage_type, key, location, numel, view_metadata)), the sorted
  list of storage keys, then each storage as an 8-byte little-endian element
  count and its raw little-endian bytes.

Why torch is not needed: a tensor is pickled as a call that views a storage
with (storage_offset, size, stride), and a storage is nothing but raw bytes
of one element type, named by its storage class (`torch.FloatStorage`,
`torch.HalfStorage`, ...) or by a dtype argument. Reading those bytes with
numpy and applying the offset and strides (`as_strided`, bounds checked)
gives the tensor bit for bit.

Why nothing from the file runs: unpickling goes through `_SafeUnpickler`,
whose `find_class` resolves a global only from an explicit allow-list, to an
inert stand-in of this module (never to torch, never importing the named
module). The allow-list:

* tensors: `torch._utils._rebuild_tensor`, `_rebuild_tensor_v2`,
  `_rebuild_tensor_v3`, `_rebuild_parameter`, `_rebuild_parameter_with_state`,
  `torch._tensor._rebuild_from_type`, `_rebuild_from_type_v2` (their new_type
  only `torch.Tensor` or `torch.nn.parameter.Parameter`),
  `torch.storage._load_from_bytes`, the storage classes `torch.<T>Storage`
  and `torch.cuda.<T>Storage` (plus `torch.storage.UntypedStorage`, the byte
  storage of uint16/32/64 and float8 tensors since torch 2.3), the torch dtypes
  that numpy can hold (`torch.float32`, ..., `torch.float8_e4m3fn`),
  `torch.Size` (-> tuple) and `torch.device` (-> its string, e.g. "cuda:0").
  All become `numpy.ndarray`s: C-contiguous copies with the tensor's shape and
  dtype; bfloat16 and float8 as `ml_dtypes` types (bit-exact; cast with
  `.astype(np.float32)`). Parameters become plain arrays too (requires_grad,
  hooks and Python attributes of tensors are dropped).
* modules: `torch_utils.persistence._reconstruct_persistent_obj` ->
  `ModuleRecord` (source kept as a string, never compiled); any class of
  `torch.nn.modules.*` or of the official code's packages (`training.*`,
  `torch_utils.*`, `dnnlib.*`, `model.*`, `op.*`) pickled by reference ->
  `ModuleRecord` named "module.Qualname" holding its BUILD state (only
  created with no arguments: NEWOBJ, `copyreg._reconstructor`, or a legacy
  ('module', ...) persistent id).
* containers: `collections.OrderedDict`, `builtins.set`, `frozenset`, `dict`,
  `complex`, `bytes` (empty), `bytearray` and `_codecs.encode` (latin-1
  only, as protocol-2 pickles write bytes), `builtins.object` (only as
  `copyreg._reconstructor`'s base), `dnnlib.util.EasyDict` -> dict,
  `argparse.Namespace` -> `types.SimpleNamespace` (`vars(ns)` gives the dict).
* numpy (module paths of numpy 1 and 2): `numpy.core.multiarray._reconstruct`
  (subtype ndarray, shape (0,) only), `.scalar`, `numpy.core.numeric._frombuffer`,
  `numpy.ndarray` (only as `_reconstruct`'s subtype), `numpy.dtype`
  (a fresh copy from a string spec).

Anything else -- `os.system`, `builtins.eval`/`exec`/`getattr`/`__import__`,
`subprocess.Popen`, `importlib.*`, any class not listed -- raises
`UnsafePickleError` when its GLOBAL opcode is read, before it can be called.
The stand-ins cannot be re-pointed by BUILD opcodes (slotted, immutable, no
`__setstate__`), so one file cannot change how the next one is read.

Py2-era strings are decoded as latin-1 (numpy arrays pickled by Python 2 keep
their bytes). Old (<= 0.3) tar-format `torch.save` files are not supported.
"""

import collections
import dataclasses
import functools
import io
import os
import pickle
import pickletools
import types
import zipfile
from typing import Any, BinaryIO, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np

try:  # numpy >= 2 (numpy 1.26 has both).
  from numpy._core import multiarray as _np_multiarray
except ImportError:  # pragma: no cover
  from numpy.core import multiarray as _np_multiarray

FORMATS = ("persistence_pickle", "torch_zip", "torch_legacy")
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
_ZIP_MAGIC = b"PK\x03\x04"
# Packages of the official code bases whose classes may be pickled by reference.
OFFICIAL_NAMESPACES = ("training", "torch_utils", "dnnlib", "model", "op")
# Python-2 module names pickle protocols < 3 write.
_MODULE_ALIASES = types.MappingProxyType({"__builtin__": "builtins", "copy_reg": "copyreg"})

# torch storage class -> torch dtype name of its elements.
_STORAGE_TYPES = types.MappingProxyType({
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
})
# torch dtypes numpy can hold, by their torch (= numpy / ml_dtypes) names.
_TORCH_DTYPES = frozenset([
    "float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool",
    "uint16", "uint32", "uint64", "complex64", "complex128", "bfloat16", "float8_e4m3fn",
    "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"])
_ML_DTYPES = frozenset(
    ["bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
     "float8_e8m0fnu"])


class UnsafePickleError(pickle.UnpicklingError):
  """A checkpoint names a global outside the allow-list; it was not called.

  `global_name` is "module.name" as the file spells it, e.g. "posix.system"
  (Python 2 module names of protocols < 3 read as Python 3's: "builtins.eval").
  """

  def __init__(self, message: str, global_name: Optional[str] = None):
    super().__init__(message)
    self.global_name = global_name


@dataclasses.dataclass(frozen=True)
class LoadedFile:
  """`format`: one of FORMATS; `contents`: the file's top-level object."""
  format: str
  contents: Any


@dataclasses.dataclass(eq=False)
class ModuleRecord:
  """A torch module as data: its class name, its source text and its `__dict__`.

  class_name: "Generator" for a persistent class; "module.Qualname" (e.g.
    "torch.nn.modules.container.Sequential") for a class pickled by reference.
  state: the module's `__dict__`: `_parameters` / `_buffers` (name ->
    np.ndarray or None), `_modules` (name -> ModuleRecord or None),
    `_non_persistent_buffers_set`, `_init_kwargs` (persistent classes), plain
    attributes (`training`, `w_dim`, ...).
  module_src: the Python source of a persistent class's file, kept as a string
    (never executed, never compiled); None for classes pickled by reference.
  version: persistence format version (persistent classes), else None.
  """
  class_name: str
  state: Dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
  module_src: Optional[str] = dataclasses.field(default=None, repr=False)
  version: Optional[int] = None

  @property
  def persistent(self) -> bool:
    return self.module_src is not None

  def __setstate__(self, state):
    """BUILD of a module pickled by reference: `state` is its `__dict__`."""
    if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
      merged = {}
      for part in state:
        if part is not None:
          merged.update(_require(part, dict, "module state"))
      state = merged
    self.state = dict(_require(state, dict, "module state"))

  def __reduce__(self):
    # Explicit, so that copy/pickle of a record never go through __setstate__.
    return (ModuleRecord, (self.class_name, self.state, self.module_src, self.version))


# ----------------------------------------------------------------------------
# Inert stand-ins for the allowed globals. Slotted, immutable and without
# __setstate__: a BUILD opcode can neither add a __dict__ entry nor set a slot
# on them, so a shared stand-in cannot be re-pointed by one file for the next.


class _Inert:
  """Base of the stand-ins: fields set once by the constructor."""
  __slots__ = ()

  def __init__(self, *values):
    for name, value in zip(self.__slots__, values, strict=True):
      object.__setattr__(self, name, value)

  def __setattr__(self, name, value):
    raise pickle.UnpicklingError(f"{type(self).__name__} stand-ins are immutable")

  def __delattr__(self, name):
    raise pickle.UnpicklingError(f"{type(self).__name__} stand-ins are immutable")

  def __repr__(self):
    fields = ", ".join(repr(getattr(self, n)) for n in self.__slots__ if n != "fn")
    return f"{type(self).__name__}({fields})"


class _Reconstructor(_Inert):
  """An allowed callable global: `fn` is one of this module's functions."""
  __slots__ = ("name", "fn")

  def __call__(self, *args):
    return self.fn(*args)


class _Marker(_Inert):
  """A global allowed only as an argument (torch.Tensor, numpy.ndarray, ...)."""
  __slots__ = ("name",)


class _StorageType(_Inert):
  """`torch.FloatStorage` & co.: `dtype` is the torch dtype name of the elements."""
  __slots__ = ("name", "dtype")


class _TorchDtype(_Inert):
  """`torch.float16` & co."""
  __slots__ = ("name",)


class _Storage(_Inert):
  """A storage: `data` is [numel] of torch dtype `dtype` (None while only probing)."""
  __slots__ = ("dtype", "data")


class _FrozenType(type):
  """Metaclass of the by-reference stand-ins: their attributes cannot be set."""

  def __setattr__(cls, name, value):
    raise pickle.UnpicklingError(f"stand-in class {cls.__name__} is immutable")


class _ByReference(metaclass=_FrozenType):
  """Base of the stand-in classes for modules pickled by reference.

  `cls.__new__(cls)` (what NEWOBJ does) returns an empty ModuleRecord named
  `record_class_name`; BUILD then fills its state. The named class is never
  imported.
  """
  __slots__ = ()
  record_class_name = ""

  def __new__(cls, *args, **kwargs):
    if args or kwargs:
      raise pickle.UnpicklingError(
          f"{cls.record_class_name} is only rebuilt from its state, not called with arguments")
    return ModuleRecord(class_name=cls.record_class_name)


def _by_reference_type(qualname: str) -> type:
  return _FrozenType(qualname.rsplit(".", 1)[-1], (_ByReference,),
                     {"__slots__": (), "record_class_name": qualname})


_TENSOR_TYPES = (_Marker("torch.Tensor"), _Marker("torch.nn.parameter.Parameter"))
_OBJECT = _Marker("builtins.object")
_NDARRAY = _Marker("numpy.ndarray")


def _require(value, kind, what: str):
  if not isinstance(value, kind):
    raise pickle.UnpicklingError(f"{what}: expected {kind}, got {type(value).__name__}")
  return value


def _int_tuple(values, what: str) -> Tuple[int, ...]:
  values = tuple(_require(values, (tuple, list), what))
  for v in values:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
      raise pickle.UnpicklingError(f"{what}: expected non-negative ints, got {values!r}")
  return values


def numpy_dtype(torch_dtype: str) -> np.dtype:
  """numpy dtype of a torch dtype name ("float32" -> '<f4', "bfloat16" -> ml_dtypes)."""
  if torch_dtype not in _TORCH_DTYPES:
    raise pickle.UnpicklingError(f"torch dtype {torch_dtype!r} has no numpy equivalent")
  if torch_dtype in _ML_DTYPES:
    import ml_dtypes  # pylint: disable=import-outside-toplevel
    return np.dtype(getattr(ml_dtypes, torch_dtype))
  return np.dtype(torch_dtype).newbyteorder("<")


# ----------------------------------------------------------------------------
# Tensors.


def _tensor_from_storage(storage, offset, size, stride, dtype: Optional[str] = None,
                         metadata=None) -> Optional[np.ndarray]:
  """The tensor `storage[offset + sum(i_k * stride_k)]`, shape `size`, as a C copy.

  storage: _Storage, data [numel]; offset, size, stride in elements of
  `dtype` (default: the storage's; v3 tensors view an untyped byte storage).
  Returns None while probing (storage data not read yet).
  """
  storage = _require(storage, _Storage, "tensor storage")
  offset = _require(offset, int, "storage offset")
  size = _int_tuple(size, "tensor size")
  stride = _int_tuple(stride, "tensor stride")
  if len(size) != len(stride) or offset < 0:
    raise pickle.UnpicklingError(f"bad tensor geometry {size}, {stride}, offset {offset}")
  if storage.data is None:
    return None
  flat = storage.data
  if dtype is not None and dtype != storage.dtype:
    target = numpy_dtype(dtype)
    if flat.nbytes % target.itemsize:
      raise pickle.UnpicklingError(f"storage of {flat.nbytes} bytes is not a {dtype} array")
    flat = np.ascontiguousarray(flat).view(np.uint8).view(target)
  if 0 in size:
    return np.zeros(size, flat.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= flat.size:
    raise pickle.UnpicklingError(
        f"tensor {size} stride {stride} offset {offset} reads past its storage of "
        f"{flat.size} elements")
  view = np.lib.stride_tricks.as_strided(
      flat[offset:], shape=size, strides=[s * flat.itemsize for s in stride], writeable=False)
  out = np.array(view, order="C", copy=True)
  return _apply_metadata(out, metadata)


def _apply_metadata(array: np.ndarray, metadata) -> np.ndarray:
  """torch's lazy conj / neg bits (`get_tensor_metadata`), applied."""
  if not metadata:
    return array
  metadata = _require(metadata, dict, "tensor metadata")
  unknown = set(metadata) - {"conj", "neg"}
  if unknown:
    raise pickle.UnpicklingError(f"unsupported tensor metadata {sorted(unknown)}")
  if metadata.get("conj"):
    array = np.conj(array)
  if metadata.get("neg"):
    array = np.negative(array)
  return array


def _rebuild_tensor(storage, offset, size, stride):
  return _tensor_from_storage(storage, offset, size, stride)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None,
                       metadata=None):
  del requires_grad, hooks
  return _tensor_from_storage(storage, offset, size, stride, metadata=metadata)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype,
                       metadata=None):
  del requires_grad, hooks
  dtype = _require(dtype, _TorchDtype, "tensor dtype")
  return _tensor_from_storage(storage, offset, size, stride, dtype.name, metadata)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
  del requires_grad, hooks, state
  if data is not None:
    _require(data, np.ndarray, "parameter data")
  return data


_TENSOR_REBUILDERS = ("torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
                      "torch._utils._rebuild_tensor_v3", "torch._utils._rebuild_parameter",
                      "torch._utils._rebuild_parameter_with_state")


def _rebuild_from_type(func, new_type, args, state):
  """`_rebuild_from_type(_v2)(func, type, args, state)`: func(*args), type dropped."""
  del state
  if not (isinstance(func, _Reconstructor) and func.name in _TENSOR_REBUILDERS):
    raise pickle.UnpicklingError(f"_rebuild_from_type of {func!r}")
  if new_type not in _TENSOR_TYPES:
    raise pickle.UnpicklingError(f"_rebuild_from_type to {new_type!r}")
  return func(*_require(args, tuple, "rebuild args"))


def _torch_size(sizes=()):
  return _int_tuple(sizes, "torch.Size")


def _torch_device(kind, index=None):
  kind = _require(kind, str, "torch.device")
  return kind if index is None else f"{kind}:{_require(index, int, 'device index')}"


# ----------------------------------------------------------------------------
# Modules and containers.


def _reconstruct_persistent_obj(meta):
  """torch_utils.persistence's reconstructor -> ModuleRecord (source not run)."""
  meta = _require(meta, dict, "persistence meta")
  if meta.get("type") != "class":
    raise pickle.UnpicklingError(f"unsupported persistent object type {meta.get('type')!r}")
  state = meta.get("state")
  return ModuleRecord(
      class_name=_require(meta.get("class_name"), str, "class_name"),
      state=dict(_require(state, dict, "persistent state")) if state is not None else {},
      module_src=_require(meta.get("module_src"), str, "module_src"),
      version=meta.get("version"))


def _copyreg_reconstructor(cls, base, state):
  """copyreg._reconstructor (protocols 0/1) for the allowed classes only."""
  if isinstance(cls, type) and issubclass(cls, _ByReference) and base is _OBJECT:
    return cls.__new__(cls)
  if cls is types.SimpleNamespace and base is _OBJECT:
    return types.SimpleNamespace()
  if cls in (dict, collections.OrderedDict) and base is dict:
    return cls(state or {})
  raise pickle.UnpicklingError(f"copyreg._reconstructor({cls!r}, {base!r}) is not allowed")


def _latin1_encode(text, encoding="utf-8"):
  """_codecs.encode as protocol-2 pickles use it for bytes: latin-1 only."""
  if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "latin_1"):
    raise pickle.UnpicklingError(f"_codecs.encode(..., {encoding!r}) is not allowed")
  return text.encode("latin-1")


def _bytes(*args):
  if args:
    raise pickle.UnpicklingError("builtins.bytes is only allowed without arguments")
  return b""


def _bytearray(data=b"", encoding=None):
  if isinstance(data, bytes) and encoding is None:
    return bytearray(data)
  return bytearray(_latin1_encode(data, encoding or "utf-8"))


# ----------------------------------------------------------------------------
# numpy.


def _np_reconstruct(subtype, shape, typecode):
  """numpy's `_reconstruct(ndarray, (0,), b'b')`; BUILD then sets the data."""
  if subtype is not _NDARRAY or tuple(shape) != (0,) or typecode not in (b"b", "b"):
    raise pickle.UnpicklingError(f"numpy _reconstruct({subtype!r}, {shape!r}, {typecode!r})")
  return _np_multiarray._reconstruct(np.ndarray, (0,), b"b")  # pylint: disable=protected-access


def _np_dtype(spec, align=False, copy=False):
  """numpy.dtype from a string spec, always a fresh copy (BUILD may modify it)."""
  del copy
  return np.dtype(_require(spec, str, "numpy dtype"), bool(align), True)


def _np_scalar(dtype, data=None):
  dtype = _require(dtype, np.dtype, "numpy scalar dtype")
  if dtype.hasobject:
    return data
  if isinstance(data, str):
    data = data.encode("latin-1")
  return _np_multiarray.scalar(dtype, _require(data, bytes, "numpy scalar data"))


def _np_frombuffer(buf, dtype, shape, order, axis_order=None):
  """numpy's protocol-5 array reducer, for in-band buffers."""
  dtype = _require(dtype, np.dtype, "numpy dtype")
  if dtype.hasobject:
    raise pickle.UnpicklingError("object arrays cannot come from a buffer")
  array = np.frombuffer(_require(buf, (bytes, bytearray), "array buffer"), dtype=dtype)
  shape = _int_tuple(shape, "array shape")
  if order == "K" and axis_order is not None:
    array = array.reshape(shape, order="C").transpose(_int_tuple(axis_order, "axis order"))
  else:
    array = array.reshape(shape, order=_require(order, str, "array order"))
  return np.array(array, copy=True)


# ----------------------------------------------------------------------------
# The allow-list.


def _reconstructors(fns: Mapping[str, Callable[..., Any]]) -> Dict[str, _Reconstructor]:
  return {name: _Reconstructor(name, fn) for name, fn in fns.items()}


_ALLOWED = types.MappingProxyType({
    **_reconstructors({
        "torch._utils._rebuild_tensor": _rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
        "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "torch._tensor._rebuild_from_type": _rebuild_from_type,
        "torch._tensor._rebuild_from_type_v2": _rebuild_from_type,
        "torch.Size": _torch_size,
        "torch.device": _torch_device,
        "torch_utils.persistence._reconstruct_persistent_obj": _reconstruct_persistent_obj,
        "copyreg._reconstructor": _copyreg_reconstructor,
        "_codecs.encode": _latin1_encode,
        "builtins.bytes": _bytes,
        "builtins.bytearray": _bytearray,
        "numpy.core.multiarray._reconstruct": _np_reconstruct,
        "numpy._core.multiarray._reconstruct": _np_reconstruct,
        "numpy.core.multiarray.scalar": _np_scalar,
        "numpy._core.multiarray.scalar": _np_scalar,
        "numpy.core.numeric._frombuffer": _np_frombuffer,
        "numpy._core.numeric._frombuffer": _np_frombuffer,
        "numpy.dtype": _np_dtype,
    }),
    "torch.Tensor": _TENSOR_TYPES[0],
    "torch.nn.parameter.Parameter": _TENSOR_TYPES[1],
    "builtins.object": _OBJECT,
    "numpy.ndarray": _NDARRAY,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.dict": dict,
    "builtins.complex": complex,
    "collections.OrderedDict": collections.OrderedDict,
    "dnnlib.util.EasyDict": dict,
    "dnnlib.EasyDict": dict,
    "argparse.Namespace": types.SimpleNamespace,
})


def _in_namespace(module: str, roots) -> bool:
  return any(module == r or module.startswith(r + ".") for r in roots)


def _refusal(global_name: str, source: str) -> UnsafePickleError:
  return UnsafePickleError(
      f"refusing to load global {global_name!r} from {source}: not an allowed "
      "tensor/container reconstructor; gen_synth never runs code from checkpoint files",
      global_name=global_name)


def resolve_global(module: str, name: str, source: str = "<pickle>") -> Any:
  """The inert stand-in for global `module.name`, or UnsafePickleError.

  Never imports `module`. `source` names the file in the error message.
  """
  if not isinstance(module, str) or not isinstance(name, str):
    raise pickle.UnpicklingError(f"bad global name {module!r}.{name!r} in {source}")
  canonical = _MODULE_ALIASES.get(module, module)
  qualname = f"{canonical}.{name}"
  if qualname == "torch.storage._load_from_bytes":
    return _Reconstructor(
        qualname, functools.partial(_load_storage_bytes, source=f"{source} (embedded storage)"))
  if qualname in _ALLOWED:
    return _ALLOWED[qualname]
  if (canonical in ("torch", "torch.cuda") and name in _STORAGE_TYPES
      or qualname == "torch.storage.UntypedStorage"):
    return _StorageType(name, _STORAGE_TYPES[name])
  if canonical == "torch" and name in _TORCH_DTYPES:
    return _TorchDtype(name)
  if _in_namespace(canonical, ("torch.nn.modules",) + OFFICIAL_NAMESPACES):
    return _by_reference_type(qualname)
  raise _refusal(qualname, source)


class _SafeUnpickler(pickle.Unpickler):
  """pickle.Unpickler whose globals come from `resolve_global` only.

  persistent_id: callable(pid) -> object for torch's persistent ids, or None
  (a persistent id is then an error).
  """

  def __init__(self, file: BinaryIO, source: str,
               persistent_id: Optional[Callable[[Any], Any]] = None):
    self._source = source
    self._persistent_id = persistent_id
    super().__init__(file, encoding="latin1")

  def find_class(self, module, name):
    return resolve_global(module, name, self._source)

  def persistent_load(self, pid):
    if self._persistent_id is None:
      raise pickle.UnpicklingError(f"unexpected persistent id {pid!r} in {self._source}")
    return self._persistent_id(pid)


def _unpickle(file: BinaryIO, source: str, persistent_id=None) -> Any:
  return _SafeUnpickler(file, source, persistent_id).load()


# ----------------------------------------------------------------------------
# Storages.


def _storage_pid(pid, n_fields: Tuple[int, ...]):
  """('storage', storage_type, key, location, numel[, view]) -> its fields."""
  if not isinstance(pid, tuple) or not pid:
    raise pickle.UnpicklingError(f"bad persistent id {pid!r}")
  kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
  if kind != "storage" or len(pid) not in n_fields:
    raise pickle.UnpicklingError(f"unsupported persistent id {pid[:1]!r}")
  storage_type = _require(pid[1], _StorageType, "storage type")
  key = pid[2].decode("ascii") if isinstance(pid[2], bytes) else _require(pid[2], str, "key")
  numel = _require(pid[4], int, "storage numel")
  view = pid[5] if len(pid) > 5 else None
  return storage_type.dtype, key, numel, view


def _storage_from_bytes(data, dtype: str, numel: int, byteorder: str = "little") -> _Storage:
  """Raw bytes -> _Storage [numel] of `dtype` (byte-swapped if big-endian)."""
  np_dtype = numpy_dtype(dtype)
  nbytes = numel * np_dtype.itemsize
  if numel < 0 or len(data) < nbytes:
    raise pickle.UnpicklingError(f"storage holds {len(data)} bytes, {nbytes} expected")
  raw = np.frombuffer(data, dtype=np.uint8, count=nbytes)
  unit = np_dtype.itemsize // 2 if np_dtype.kind == "c" else np_dtype.itemsize
  if byteorder == "big" and unit > 1:
    raw = raw.reshape(-1, unit)[:, ::-1].reshape(-1)
  return _Storage(dtype, np.ascontiguousarray(raw).view(np_dtype))


class _ZipStorages:
  """persistent_id of a torch zip archive: reads `<prefix>data/<key>` once."""

  def __init__(self, archive: zipfile.ZipFile, prefix: str, byteorder: str):
    self._archive, self._prefix, self._byteorder = archive, prefix, byteorder
    self._cache: Dict[Tuple[str, str], _Storage] = {}

  def __call__(self, pid) -> _Storage:
    dtype, key, numel, _ = _storage_pid(pid, (5,))
    if (key, dtype) not in self._cache:
      data = self._archive.read(f"{self._prefix}data/{key}")
      self._cache[key, dtype] = _storage_from_bytes(data, dtype, numel, self._byteorder)
    return self._cache[key, dtype]


def _legacy_probe(found: Dict[str, Tuple[str, int]], pid):
  """First pass over a legacy pickle: records each root storage's dtype."""
  if isinstance(pid, tuple) and pid and pid[0] in ("module", b"module"):
    return _legacy_module(pid)
  dtype, key, numel, _ = _storage_pid(pid, (5, 6))
  found.setdefault(key, (dtype, numel))
  return _Storage(dtype, None)


def _legacy_module(pid):
  """('module', cls, source_file, source): the class, only a by-reference stand-in."""
  cls = pid[1] if len(pid) > 1 else None
  if not (isinstance(cls, type) and issubclass(cls, _ByReference)):
    raise pickle.UnpicklingError(f"legacy module id for {cls!r}")
  return cls


def _legacy_storage(roots: Mapping[str, _Storage], pid) -> _Storage:
  """Second pass: the storage, or its view (key, offset, numel) in elements."""
  if isinstance(pid, tuple) and pid and pid[0] in ("module", b"module"):
    return _legacy_module(pid)
  dtype, key, _, view = _storage_pid(pid, (5, 6))
  root = roots[key]
  if root.dtype != dtype:
    raise pickle.UnpicklingError(f"storage {key} read as {root.dtype} and {dtype}")
  if view is None:
    return root
  _, offset, numel = view
  offset, numel = _int_tuple((offset, numel), "storage view")
  if offset + numel > root.data.size:
    raise pickle.UnpicklingError(f"storage view {view!r} past its root storage")
  return _Storage(dtype, root.data[offset:offset + numel])


def _remaining_bytes(f: BinaryIO) -> int:
  here = f.tell()
  end = f.seek(0, os.SEEK_END)
  f.seek(here)
  return end - here


def _read_legacy_storage(f: BinaryIO, dtype: str) -> _Storage:
  """8-byte little-endian element count, then that many little-endian elements."""
  header = f.read(8)
  if len(header) != 8:
    raise pickle.UnpicklingError("truncated legacy storage header")
  numel = int.from_bytes(header, "little", signed=True)
  nbytes = numel * numpy_dtype(dtype).itemsize
  if numel < 0 or nbytes > _remaining_bytes(f):
    raise pickle.UnpicklingError(f"legacy storage of {numel} elements past the end of file")
  return _storage_from_bytes(f.read(nbytes), dtype, numel)


def _load_legacy_file(f: BinaryIO, source: str) -> Any:
  """A legacy `torch.save` stream (seekable); see the module docstring."""
  if _unpickle(f, source) != LEGACY_MAGIC_NUMBER:
    raise pickle.UnpicklingError(f"{source}: not a legacy torch.save file")
  version = _unpickle(f, source)
  if version != LEGACY_PROTOCOL_VERSION:
    raise pickle.UnpicklingError(f"{source}: legacy protocol version {version!r}")
  _unpickle(f, source)  # sys_info: endianness and C type sizes of the writer.
  start = f.tell()
  found: Dict[str, Tuple[str, int]] = {}
  _unpickle(f, source, functools.partial(_legacy_probe, found))
  keys = _unpickle(f, source)
  if not isinstance(keys, list) or set(keys) - set(found):
    raise pickle.UnpicklingError(f"{source}: storage keys {keys!r} do not match its pickle")
  roots = {key: _read_legacy_storage(f, found[key][0]) for key in keys}
  f.seek(start)
  return _unpickle(f, source, functools.partial(_legacy_storage, roots))


def _load_storage_bytes(data, source: str) -> Any:
  """torch.storage._load_from_bytes: a legacy `torch.save` held in bytes."""
  return _load_legacy_file(io.BytesIO(_require(data, bytes, "storage bytes")), source)


def _load_zip(f: BinaryIO, source: str) -> Any:
  with zipfile.ZipFile(f) as archive:
    pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pickles) != 1:
      raise pickle.UnpicklingError(f"{source}: not a torch.save archive (data.pkl: {pickles})")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder = "little"
    if f"{prefix}byteorder" in archive.namelist():
      byteorder = archive.read(f"{prefix}byteorder").decode("ascii").strip()
      if byteorder not in ("little", "big"):
        raise pickle.UnpicklingError(f"{source}: byteorder {byteorder!r}")
    with archive.open(pickles[0]) as pkl:
      return _unpickle(pkl, source, _ZipStorages(archive, prefix, byteorder))


# ----------------------------------------------------------------------------
# Public API.


def _is_legacy(head: bytes) -> bool:
  """Whether `head` starts with a pickle of torch's legacy magic number (read, not run)."""
  try:
    for op, arg, _ in pickletools.genops(io.BytesIO(head)):
      if op.name not in ("PROTO", "FRAME"):
        return op.name in ("LONG1", "LONG4", "LONG", "INT") and arg == LEGACY_MAGIC_NUMBER
  except (ValueError, EOFError):
    return False
  return False


def detect_format(head: bytes) -> str:
  """One of FORMATS from a file's first bytes (64 are enough)."""
  if head.startswith(_ZIP_MAGIC):
    return "torch_zip"
  if _is_legacy(head[:64]):
    return "torch_legacy"
  return "persistence_pickle"


def load(path: Union[str, os.PathLike]) -> LoadedFile:
  """Reads a checkpoint file of any of FORMATS; runs none of its code.

  Returns LoadedFile(format, contents). Tensors come back as np.ndarray,
  modules as ModuleRecord (see the module docstring). Raises UnsafePickleError
  for a global outside the allow-list, pickle.UnpicklingError for anything
  else malformed or unsupported.
  """
  source = os.fspath(path)
  with open(source, "rb") as f:
    head = f.read(512)
    f.seek(0)
    kind = detect_format(head)
    if kind == "persistence_pickle" and len(head) >= 262 and head[257:262] == b"ustar":
      raise pickle.UnpicklingError(f"{source}: tar-format torch.save files are not supported")
    readers = {"torch_zip": _load_zip, "torch_legacy": _load_legacy_file,
               "persistence_pickle": _unpickle}
    try:
      contents = readers[kind](f, source)
    except pickle.UnpicklingError:
      raise
    except Exception as e:  # malformed input surfaces as one error type
      raise pickle.UnpicklingError(f"{source}: cannot read {kind}: {e!r}") from e
  return LoadedFile(format=kind, contents=contents)


def module_state_dict(record: ModuleRecord,
                      prefix: str = "") -> "collections.OrderedDict[str, np.ndarray]":
  """Dotted name -> array, in the order torch's `Module.state_dict()` gives.

  Per module: its `_parameters`, then its `_buffers` (skipping None entries
  and names in `_non_persistent_buffers_set`), then each child of `_modules`
  recursively with prefix "<child name>.". Extra state and state-dict hooks
  (which would run code) are not reproduced.
  """
  out = collections.OrderedDict()
  _collect_state(_require(record, ModuleRecord, "module"), prefix, out)
  return out


def _collect_state(record: ModuleRecord, prefix: str, out) -> None:
  state = record.state
  non_persistent = state.get("_non_persistent_buffers_set") or set()
  for name, value in (state.get("_parameters") or {}).items():
    if value is not None:
      out[prefix + name] = value
  for name, value in (state.get("_buffers") or {}).items():
    if value is not None and name not in non_persistent:
      out[prefix + name] = value
  for name, child in (state.get("_modules") or {}).items():
    if child is not None:
      _collect_state(_require(child, ModuleRecord, f"submodule {prefix + name}"),
                     f"{prefix}{name}.", out)


def _to_plain(value):
  """dict subclasses -> dict, recursively through dicts, lists and tuples."""
  if isinstance(value, dict):
    return {k: _to_plain(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_to_plain(v) for v in value]
  if isinstance(value, tuple):
    return tuple(_to_plain(v) for v in value)
  return value


def init_kwargs(record: ModuleRecord) -> Dict[str, Any]:
  """The keyword arguments a persistent module was built with; {} otherwise."""
  if not record.persistent:
    return {}
  return _to_plain(record.state.get("_init_kwargs") or {})
