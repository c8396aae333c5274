"""Reads PyTorch `state_dict` files without torch and without running any pickled code.

A `.pt`/`.pth` file written by `torch.save(model.state_dict(), path)` is a pickle whose tensors
point at raw storages. This module reads both of torch's layouts:

  * the zip archive of torch >= 1.6: `<name>/data.pkl` plus one `<name>/data/<key>` file per
    storage (and `<name>/byteorder`);
  * the legacy stream of torch < 1.6: pickled magic number, protocol, system info, the object,
    the list of storage keys, then each storage as an int64 element count and its raw bytes.

The pickle is read by an unpickler that resolves only the few globals a state_dict needs
(`collections.OrderedDict`, torch's tensor-rebuild functions and the typed-storage classes); any
other global (`os.system`, a model class, ...) is refused by name before anything is called.
Storages are decoded with numpy.

Typical use, for an importer of some PyTorch model::

  state_dict = read_state_dict(path)               # {key: np.ndarray}
  check_state_dict(state_dict, {"conv.weight": (64, 3, 3, 3), ...}, source=path)
  kernel_HWIO = conv_kernel(state_dict["conv.weight"])
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from typing import Any, BinaryIO, Mapping

import ml_dtypes
import numpy as np


class WeightFileError(ValueError):
  """A weight file that is unreadable, unsafe, or not the state_dict that was expected."""


# torch's typed-storage classes as pickled by torch.save, and the element type of each.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
}

_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001
_RESAVE_HINT = ("re-save it with torch >= 1.6: "
                "torch.save(torch.load(old_path), new_path)")


class _Refused(Exception):
  """Raised inside the unpickler; turned into a WeightFileError naming the file."""


class _StorageType:
  """What the unpickler returns for `torch.FloatStorage` & co: just the element dtype."""
  __slots__ = ("name", "dtype")

  def __init__(self, name: str, dtype: np.dtype):
    self.name = name
    self.dtype = dtype

  def __setstate__(self, state):
    raise _Refused("unexpected pickle state on a storage type")


class _StorageRef:
  """A storage named in the pickle: elements [offset, offset + numel) of the storage file `key`."""
  __slots__ = ("key", "dtype", "numel", "offset")

  def __init__(self, key: str, dtype: np.dtype, numel: int, offset: int = 0):
    self.key = key
    self.dtype = dtype
    self.numel = numel
    self.offset = offset

  def __setstate__(self, state):
    raise _Refused("unexpected pickle state on a storage")


class _TensorRef:
  """A tensor as torch pickles it: a strided view into a storage, materialised after loading."""
  __slots__ = ("storage", "offset", "size", "stride")

  def __init__(self, storage: _StorageRef, offset: int, size: tuple, stride: tuple):
    self.storage = storage
    self.offset = offset
    self.size = size
    self.stride = stride

  def __setstate__(self, state):
    raise _Refused("unexpected pickle state on a tensor")


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> _TensorRef:
  """Stands in for torch._utils._rebuild_tensor(_v2); grad flags and hooks are ignored."""
  if not isinstance(storage, _StorageRef):
    raise _Refused(f"a tensor is built from {type(storage).__name__}, not a storage")
  size, stride = tuple(size), tuple(stride)
  if not (_is_int(storage_offset) and storage_offset >= 0 and len(size) == len(stride)
          and all(_is_int(n) and n >= 0 for n in size + stride)):
    raise _Refused(f"invalid tensor layout: offset={storage_offset!r} size={size!r} "
                   f"stride={stride!r}")
  return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state) -> _TensorRef:
  """Stands in for torch._utils._rebuild_parameter(_with_state): a Parameter is its data."""
  if not isinstance(data, _TensorRef):
    raise _Refused(f"a parameter wraps {type(data).__name__}, not a tensor")
  return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
  """Resolves only `_ALLOWED_GLOBALS`; storages become `_StorageRef`s via `persistent_load`."""

  def __init__(self, file: BinaryIO):
    super().__init__(file)
    self.storages: dict[str, _StorageRef] = {}

  def find_class(self, module: str, name: str):
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise _Refused(f"refused to load the global '{module}.{name}': only tensors, storages and "
                     "OrderedDict may appear in a state_dict file") from None

  def persistent_load(self, pid):
    # zip: ('storage', type, key, location, numel); legacy adds view_metadata.
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
      raise _Refused(f"unsupported persistent id {pid!r:.80}")
    storage_type, key, _location, numel = pid[1:5]
    if not (isinstance(storage_type, _StorageType) and isinstance(key, str) and _is_int(numel)
            and numel >= 0):
      raise _Refused(f"invalid storage reference {pid!r:.120}")
    root = self.storages.get(key)
    if root is None:
      root = self.storages[key] = _StorageRef(key, storage_type.dtype, numel)
    elif root.dtype != storage_type.dtype:
      raise _Refused(f"storage {key!r} is referenced with two element types")
    view = pid[5] if len(pid) == 6 else None
    if view is None:
      return root
    _view_key, view_offset, view_numel = view
    if not (_is_int(view_offset) and _is_int(view_numel) and view_offset >= 0
            and view_numel >= 0 and view_offset + view_numel <= root.numel):
      raise _Refused(f"invalid storage view {view!r:.80} of storage {key!r}")
    return _StorageRef(key, root.dtype, view_numel, view_offset)


def _unpickle(file: BinaryIO) -> tuple[Any, dict[str, _StorageRef]]:
  unpickler = _StateDictUnpickler(file)
  return unpickler.load(), unpickler.storages


def _swap_bytes(raw: bytes, dtype: np.dtype) -> bytes:
  """Big-endian storage bytes -> little endian (complex numbers swap each component)."""
  component = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
  if component == 1:
    return raw
  return np.frombuffer(raw, f">u{component}").astype(f"<u{component}").tobytes()


def _storage_array(raw: bytes, dtype: np.dtype, numel: int, big_endian: bool, what: str
                   ) -> np.ndarray:
  nbytes = numel * dtype.itemsize
  if len(raw) < nbytes:
    raise _Refused(f"{what} holds {len(raw)} bytes, {nbytes} expected (truncated file?)")
  raw = raw[:nbytes]
  if big_endian:
    raw = _swap_bytes(raw, dtype)
  return np.frombuffer(raw, dtype)


def _materialise(tensor: _TensorRef, storage_arrays: Mapping[str, np.ndarray]) -> np.ndarray:
  ref = tensor.storage
  data = storage_arrays[ref.key][ref.offset:ref.offset + ref.numel]
  if 0 in tensor.size:
    return np.zeros(tensor.size, ref.dtype)
  last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
  if last >= data.shape[0]:
    raise _Refused(f"a tensor of size {tensor.size} and stride {tensor.stride} at offset "
                   f"{tensor.offset} reaches past the end of its storage ({data.shape[0]} "
                   "elements)")
  view = np.lib.stride_tricks.as_strided(
      data[tensor.offset:], shape=tensor.size,
      strides=tuple(s * ref.dtype.itemsize for s in tensor.stride), writeable=False)
  return np.array(view, order="C", copy=True)


# A state_dict's pickle names tensors (kilobytes); the data is in the storage records.
_MAX_PICKLE_BYTES = 64 << 20
_MAX_BYTEORDER_BYTES = 16


def _read_record(archive: zipfile.ZipFile, name: str, nbytes: int, *, exact: bool) -> bytes:
  """A zip record's bytes, its declared size checked before anything is inflated.

  `exact`: the record must declare `nbytes` (a storage: its elements times their size); else at
  most `nbytes`. zipfile stops inflating at the declared size (and then fails the CRC), so a
  record whose compressed stream inflates to more (a zip bomb) costs no more than `nbytes`.
  """
  declared = archive.getinfo(name).file_size
  if declared > nbytes or (exact and declared != nbytes):
    raise _Refused(f"the record {name!r} declares {declared} bytes, "
                   f"{'' if exact else 'at most '}{nbytes} expected"
                   + (" (truncated file?)" if declared < nbytes else ""))
  with archive.open(name) as f:
    raw = f.read(nbytes)
  if len(raw) != declared:
    raise _Refused(f"the record {name!r} holds {len(raw)} bytes, {declared} declared")
  return raw


def _read_zip(path: str) -> tuple[Any, dict[str, np.ndarray]]:
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pickles) != 1:
      raise _Refused("a zip file without a torch 'data.pkl' record: not a torch.save() file")
    prefix = pickles[0][:-len("data.pkl")]
    big_endian = False
    if prefix + "byteorder" in names:
      order = _read_record(archive, prefix + "byteorder", _MAX_BYTEORDER_BYTES, exact=False)
      order = order.decode("ascii", "replace").strip()
      if order not in ("little", "big"):
        raise _Refused(f"unknown byte order {order!r}")
      big_endian = order == "big"
    obj, storages = _unpickle(io.BytesIO(
        _read_record(archive, pickles[0], _MAX_PICKLE_BYTES, exact=False)))
    arrays = {}
    for key, ref in storages.items():
      record = f"{prefix}data/{key}"
      if record not in names:
        raise _Refused(f"the storage record {record!r} is missing")
      raw = _read_record(archive, record, ref.numel * ref.dtype.itemsize, exact=True)
      arrays[key] = _storage_array(raw, ref.dtype, ref.numel, big_endian,
                                   f"storage record {record!r}")
  return obj, arrays


def _read_legacy(path: str) -> tuple[Any, dict[str, np.ndarray]]:
  file_size = os.path.getsize(path)
  with open(path, "rb") as f:
    magic, _ = _unpickle(f)
    if magic != _LEGACY_MAGIC_NUMBER:
      raise _Refused("neither a torch zip archive nor a legacy torch.save() stream")
    protocol, _ = _unpickle(f)
    if protocol != _LEGACY_PROTOCOL_VERSION:
      raise _Refused(f"unsupported legacy torch protocol {protocol!r}; {_RESAVE_HINT}")
    sys_info, _ = _unpickle(f)
    big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    obj, storages = _unpickle(f)
    keys, _ = _unpickle(f)
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
      raise _Refused("malformed list of storage keys")
    arrays = {}
    for key in keys:
      if key not in storages:
        raise _Refused(f"storage {key!r} is listed but never used")
      ref = storages[key]
      header = f.read(8)
      if len(header) != 8:
        raise _Refused(f"storage {key!r} is missing (truncated file?)")
      numel = int.from_bytes(header, "big" if big_endian else "little", signed=True)
      if numel != ref.numel:
        raise _Refused(f"storage {key!r} holds {numel} elements, {ref.numel} expected")
      nbytes = numel * ref.dtype.itemsize
      if nbytes > file_size - f.tell():  # checked before read() allocates nbytes
        raise _Refused(f"storage {key!r} needs {nbytes} bytes, the file has "
                       f"{file_size - f.tell()} left (truncated file?)")
      arrays[key] = _storage_array(f.read(nbytes), ref.dtype, numel, big_endian,
                                   f"storage {key!r}")
    missing = sorted(set(storages) - set(keys))
    if missing:
      raise _Refused(f"storages {missing} are used but not stored")
  return obj, arrays


def _unwrap_state_dict(obj: Any) -> Mapping[str, Any]:
  """The state_dict itself, or the one inside a {'state_dict': ...} / {'model': ...} wrapper."""
  if not isinstance(obj, dict):
    raise _Refused(f"the file holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")
  if not all(isinstance(v, _TensorRef) for v in obj.values()):
    for wrapper_key in ("state_dict", "model"):
      if isinstance(obj.get(wrapper_key), dict):
        return _unwrap_state_dict(obj[wrapper_key])
  for key, value in obj.items():
    if not isinstance(key, str):
      raise _Refused(f"not a state_dict: the key {key!r} is not a string")
    if not isinstance(value, _TensorRef):
      raise _Refused(f"not a state_dict: {key!r} holds a {type(value).__name__}, not a tensor")
  return obj


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a PyTorch state_dict file (torch.save) into {key: numpy array}, without torch.

  Tensors keep their shape and dtype (float16 stays float16, bfloat16 is `ml_dtypes.bfloat16`)
  and come back C-contiguous whatever their strides in the file. A top-level
  {'state_dict': ...} or {'model': ...} wrapper is unwrapped.

  Raises:
    WeightFileError: the file is missing, truncated or corrupt, names a global other than those
      a state_dict needs (nothing from the file is executed), or does not hold a state_dict.
  """
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      head = f.read(512)
  except OSError as e:
    raise WeightFileError(f"{path}: cannot read the weight file: {e}") from e
  try:
    if head.startswith(b"PK"):
      obj, arrays = _read_zip(path)
    elif len(head) > 262 and head[257:262] == b"ustar":
      raise _Refused(f"a tar archive from torch < 0.4 is not supported; {_RESAVE_HINT}")
    elif head.startswith(b"\x80"):
      obj, arrays = _read_legacy(path)
    else:
      raise _Refused("not a file written by torch.save()")
    state_dict = _unwrap_state_dict(obj)
    return {key: _materialise(tensor, arrays) for key, tensor in state_dict.items()}
  except _Refused as e:
    raise WeightFileError(f"{path}: {e}") from None
  except zipfile.BadZipFile as e:
    raise WeightFileError(f"{path}: corrupt or truncated zip archive ({e})") from None
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
          AttributeError, OverflowError, MemoryError, UnicodeDecodeError) as e:
    raise WeightFileError(f"{path}: corrupt or truncated torch file "
                          f"({type(e).__name__}: {e})") from None


def check_state_dict(state_dict: Mapping[str, Any], expected: Mapping[str, tuple],
                     source: str = "state_dict") -> None:
  """Checks keys and shapes of `state_dict` against `expected` ({key: shape}).

  Raises:
    WeightFileError: naming `source` and listing ALL missing keys, unexpected keys and shape
      mismatches (key, expected shape, found shape) at once.
  """
  missing = [k for k in expected if k not in state_dict]
  unexpected = [k for k in state_dict if k not in expected]
  mismatched = [(k, tuple(expected[k]), tuple(np.shape(state_dict[k])))
                for k in expected if k in state_dict
                and tuple(np.shape(state_dict[k])) != tuple(expected[k])]
  if not (missing or unexpected or mismatched):
    return
  lines = [f"{source}: the weights do not match the model:"]
  if missing:
    lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
  if unexpected:
    lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
  if mismatched:
    lines.append(f"  shape mismatches ({len(mismatched)}):")
    lines.extend(f"    {k}: expected {e}, found {f}" for k, e, f in mismatched)
  raise WeightFileError("\n".join(lines))


def conv_kernel(w_OIHW: np.ndarray) -> np.ndarray:
  """torch Conv2d weight (out, in, kh, kw) -> Flax `nn.Conv` kernel (kh, kw, in, out)."""
  return np.transpose(np.asarray(w_OIHW), (2, 3, 1, 0))


def conv_transpose_kernel(w_IOHW: np.ndarray) -> np.ndarray:
  """torch ConvTranspose2d weight (in, out, kh, kw) -> `nn.ConvTranspose(transpose_kernel=True)`
  kernel (kh, kw, out, in).

  With `transpose_kernel=True` the Flax layer flips the kernel spatially and swaps its channel
  axes itself, i.e. it computes the gradient of a forward conv whose HWIO kernel is this array,
  which is exactly what torch's ConvTranspose2d computes with its (in, out, kh, kw) weight.
  """
  return np.transpose(np.asarray(w_IOHW), (2, 3, 1, 0))


def linear_kernel(w_OI: np.ndarray) -> np.ndarray:
  """torch Linear weight (out, in) -> Flax `nn.Dense` kernel (in, out)."""
  return np.transpose(np.asarray(w_OI), (1, 0))
