"""Import the reference tutorial's released checkpoint (``checkpoint_ssd300.pth.tar``) without running it.

The tutorial (sgrvinod/a-PyTorch-Tutorial-to-Object-Detection) published its 77.2-mAP model as
``torch.save({'epoch': e, 'model': SSD300(...), 'optimizer': SGD(...)})`` from PyTorch 0.4: a pickle of
whole objects (classes from a module named ``model``, ``torch.nn`` layers, a torch SGD optimizer) in the
legacy non-zip serialisation. ``torch.load`` can only read it with ``weights_only=False``, which runs
whatever the pickle names. This module reads it with a restricted unpickler instead:

* tensors, parameters and plain containers are rebuilt by our own functions (never torch's or the
  file's), from storages we read ourselves (legacy stream or zip archive);
* the known classes (``model.SSD300``, ``model.VGGBase``, ... and ``torch.nn.modules.*``,
  ``torch.optim.*``) become inert stand-ins that only record the ``__dict__`` the pickle gives them;
* every other global (``os.system``, ``builtins.eval``, ``subprocess.*``, unknown classes) is refused
  when the pickle names it, before anything could call it; so are opcodes that would call or build
  anything but our functions and stand-ins.

The stand-in tree is then walked (``_modules`` / ``_parameters``) into a state dict with our
parameter names, which are the tutorial's (see :mod:`ssd_train.model`).
"""
from __future__ import annotations

import _compat_pickle
import io
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import torch

from ssd_runtime.fileio import sha256_file
from ssd_runtime.priors import PriorConfig, make_priors
from ssd_runtime.spec import VOC_CLASSES, ModelSpec
from ssd_train.checkpoint import CheckpointError, save_checkpoint
from ssd_train.model import SSD300

#: Header values of torch's legacy (non-zip) serialisation.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

#: Classes of the tutorial's ``model.py`` that may appear in its checkpoint (as inert stand-ins).
TUTORIAL_CLASSES = frozenset({"SSD300", "VGGBase", "AuxiliaryConvolutions", "PredictionConvolutions"})
#: torch packages whose classes (layers, containers, optimizers) may appear, as inert stand-ins.
STANDIN_PACKAGES = ("torch.nn.modules.", "torch.optim.")
#: The tutorial's module tree is 2 levels deep (model.base.conv1_1); anything far deeper is refused.
MAX_MODULE_DEPTH = 8
#: Largest difference allowed between the file's ``priors_cxcy`` and ours (float32 rounding).
PRIORS_ATOL = 1e-5

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}  # fmt: skip


class TutorialCheckpointError(CheckpointError):
    """The tutorial checkpoint is missing, corrupt, or not the tutorial's SSD300."""


class UnsafeCheckpointError(TutorialCheckpointError):
    """The file's pickle names something other than tensors, containers and the known classes."""


class _Refused(Exception):
    """Raised inside the unpickler; becomes an UnsafeCheckpointError naming the file."""


class _Corrupt(Exception):
    """Raised inside the readers; becomes a TutorialCheckpointError naming the file."""


# --- inert stand-ins -------------------------------------------------------------------------------


class StandIn:
    """An inert record of a pickled object: its class name and the state the pickle gave it.

    Subclasses are made per class name by the unpickler; they have no behaviour (no ``__call__``,
    ``__getattr__``, ``__setstate__``), so nothing the file contains can run through them.
    """

    origin: ClassVar[str] = "?"
    state: dict[str, Any]

    def __repr__(self) -> str:
        return f"<stand-in for {self.origin}>"


def _new_standin(cls: type) -> StandIn:
    if not (isinstance(cls, type) and issubclass(cls, StandIn) and cls is not StandIn):
        raise _Refused(f"refused to create an object of {cls!r}: only the known classes are rebuilt, as stand-ins")
    obj = object.__new__(cls)
    obj.state = {}
    return obj


@dataclass(frozen=True)
class _StorageType:
    """What a pickled ``torch.FloatStorage`` (etc.) global stands for: a name and a dtype, not callable."""

    name: str
    dtype: torch.dtype


class _Marker:
    """A pickled global that may only be an argument (``builtins.object``, ``builtins.dict``)."""

    def __init__(self, name: str) -> None:
        self.name = name


_OBJECT = _Marker("builtins.object")
_DICT_TYPE = _Marker("builtins.dict")


class _StorageRef:
    """A storage read from the file: ``nbytes`` bytes at ``byte_offset`` of a uint8 CPU buffer."""

    def __init__(self, buffer: torch.Tensor, dtype: torch.dtype, byte_offset: int = 0, nbytes: int | None = None):
        self.buffer = buffer
        self.dtype = dtype
        self.byte_offset = byte_offset
        self.nbytes = buffer.numel() - byte_offset if nbytes is None else nbytes
        self.filled = False

    @classmethod
    def allocate(cls, dtype: torch.dtype, nbytes: int) -> _StorageRef:
        return cls(torch.empty(nbytes, dtype=torch.uint8), dtype)

    @property
    def element_size(self) -> int:
        return torch.empty(0, dtype=self.dtype).element_size()

    def fill_from(self, stream: io.RawIOBase | io.BufferedIOBase) -> None:
        """Read exactly ``nbytes`` from ``stream`` straight into the buffer."""
        view = memoryview(self.buffer.numpy())[self.byte_offset : self.byte_offset + self.nbytes]
        done = 0
        while done < self.nbytes:
            count = stream.readinto(view[done:])
            if not count:
                raise _Corrupt(f"storage data ends after {done} of {self.nbytes} bytes")
            done += count
        self.filled = True


# --- safe rebuild functions (the only callables a pickle can reach) -----------------------------------


def _check_ints(name: str, values: Any) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or not all(type(v) is int and v >= 0 for v in values):
        raise _Corrupt(f"tensor {name} must be non-negative integers, got {values!r}")
    return tuple(values)


def _rebuild_tensor(
    storage: Any, storage_offset: Any, size: Any, stride: Any,
    requires_grad: Any = False, backward_hooks: Any = None, metadata: Any = None,
) -> torch.Tensor:  # fmt: skip
    """``torch._utils._rebuild_tensor_v2``'s arguments -> a CPU tensor on ``storage`` (bounds-checked)."""
    if not isinstance(storage, _StorageRef):
        raise _Refused(f"a tensor must be rebuilt from a storage, got {type(storage).__name__}")
    if backward_hooks or metadata:
        raise _Refused("tensors with backward hooks or metadata are not rebuilt")
    (offset,) = _check_ints("offset", [storage_offset])
    size, stride = _check_ints("size", size), _check_ints("stride", stride)
    if len(size) != len(stride):
        raise _Corrupt(f"tensor size {size} and stride {stride} differ in length")
    element_size = storage.element_size
    capacity = storage.nbytes // element_size
    if 0 not in size and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= capacity:
        raise _Corrupt(f"tensor of size {size} at offset {offset} reaches past its storage of {capacity} elements")
    base_offset, remainder = divmod(storage.byte_offset, element_size)
    if remainder:
        raise _Corrupt("storage view is not aligned to its element size")
    tensor = torch.empty(0, dtype=storage.dtype)
    return tensor.set_(storage.buffer.untyped_storage(), base_offset + offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = True, backward_hooks: Any = None, state: Any = None) -> torch.Tensor:
    """``Parameter(data, requires_grad)`` (PyTorch 0.4) or ``_rebuild_parameter[_with_state]`` -> the tensor."""
    if not isinstance(data, torch.Tensor):
        raise _Refused(f"a parameter must wrap a tensor, got {type(data).__name__}")
    if backward_hooks or not isinstance(state, (dict, type(None))):
        raise _Refused("parameters with hooks or non-dict state are not rebuilt")
    return data  # the weights are all we keep


def _ordered_dict(items: Any = ()) -> OrderedDict:
    if not isinstance(items, (list, tuple)):
        raise _Refused(f"OrderedDict from {type(items).__name__} is not rebuilt")
    return OrderedDict(items)


def _plain_dict(factory: Any = None) -> dict:
    """``collections.defaultdict(factory)`` -> a plain dict: the factory is never called."""
    return {}


def _set(items: Any = ()) -> set:
    if not isinstance(items, (list, tuple)):
        raise _Refused(f"set from {type(items).__name__} is not rebuilt")
    return set(items)


def _frozenset(items: Any = ()) -> frozenset:
    return frozenset(_set(items))


def _reconstructor(cls: Any, base: Any, state: Any) -> StandIn:
    """``copyreg._reconstructor`` (pickle protocols 0 and 1), for stand-ins over ``object`` only."""
    if base is not _OBJECT or state is not None:
        raise _Refused("copyreg._reconstructor is only allowed as object.__new__(stand-in)")
    return _new_standin(cls)


def _nothing() -> None:
    """``torch.nn.backends.thnn._get_thnn_function_backend`` (PyTorch 0.4 modules' ``_backend``)."""
    return None


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.nn.parameter", "Parameter"): _rebuild_parameter,
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _nothing,
    ("collections", "OrderedDict"): _ordered_dict,
    ("collections", "defaultdict"): _plain_dict,
    ("builtins", "dict"): _DICT_TYPE,
    ("builtins", "set"): _set,
    ("builtins", "frozenset"): _frozenset,
    ("builtins", "object"): _OBJECT,
    ("copyreg", "_reconstructor"): _reconstructor,
}
_CALLABLES = frozenset(
    f for f in _SAFE_GLOBALS.values() if callable(f) and not isinstance(f, _Marker)
)


# --- the restricted unpickler -------------------------------------------------------------------------


class RestrictedUnpickler(pickle._Unpickler):  # the Python implementation: every opcode is inspectable
    """Unpickles tensors, parameters, plain containers and stand-ins of known classes; refuses the rest.

    ``load_storage`` receives the persistent id of each storage (without the leading ``'storage'``)
    and returns a :class:`_StorageRef`; ``None`` refuses storages (for the header pickles).
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: io.BufferedIOBase, load_storage: Callable[[tuple], _StorageRef] | None = None,
                 standins: dict[str, type] | None = None) -> None:
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage
        self._standins = {} if standins is None else standins

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3:  # Python 2 names (__builtin__, copy_reg)
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        known = (module == "model" and name in TUTORIAL_CLASSES) or (
            module.startswith(STANDIN_PACKAGES) and name.isidentifier()
        )
        if not known:
            raise _Refused(f"it references {module}.{name}, which is not a tensor, parameter, container "
                           "or one of the tutorial's classes")
        key = f"{module}.{name}"
        if key not in self._standins:
            self._standins[key] = type(name, (StandIn,), {"origin": key, "__module__": __name__})
        return self._standins[key]

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise _Corrupt(f"unexpected persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module" and len(pid) == 4:  # legacy: ('module', class, source file, source)
            return self._check_standin_class(pid[1])
        if kind == "storage" and self._load_storage is not None:
            return self._load_storage(pid[1:])
        raise _Refused(f"unexpected persistent id of kind {kind!r}")

    @staticmethod
    def _check_standin_class(cls: Any) -> type:
        if not (isinstance(cls, type) and issubclass(cls, StandIn)):
            raise _Refused(f"{cls!r} is not one of the known classes")
        return cls

    # Opcodes that call or build things: only our rebuild functions and stand-ins.
    def _load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if not any(func is f for f in _CALLABLES) or not isinstance(args, tuple):
            raise _Refused(f"refused to call {func!r}: only tensors, parameters and containers are rebuilt")
        self.stack[-1] = func(*args)

    def _load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if args:
            raise _Refused(f"refused to create {cls!r} with arguments")
        self.append(_new_standin(cls))

    def _load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if args or kwargs:
            raise _Refused(f"refused to create {cls!r} with arguments")
        self.append(_new_standin(cls))

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, StandIn):
            raise _Refused(f"refused to set the state of a {type(inst).__name__}: only stand-ins take state")
        slotstate = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slotstate = state
        for part in (state, slotstate):
            if part is None:
                continue
            if not isinstance(part, dict) or not all(isinstance(k, str) for k in part):
                raise _Refused(f"refused state of type {type(part).__name__} for {inst.origin}")
            inst.state.update(part)

    def _refuse_opcode(self) -> None:
        raise _Refused("it uses pickle opcodes for old-style instances or extension codes")

    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.NEWOBJ[0]] = _load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex
    dispatch[pickle.BUILD[0]] = _load_build
    for _opcode in (pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_opcode[0]] = _refuse_opcode
    del _opcode


# --- the two file formats -----------------------------------------------------------------------------


def _storage_args(args: tuple, expected_len: int) -> tuple[_StorageType, str, int, Any]:
    """Check (storage_type, key, location, numel[, view]) and return (type, key, nbytes, view)."""
    if len(args) != expected_len:
        raise _Corrupt(f"storage id has {len(args)} fields, expected {expected_len}")
    storage_type, key, _location, numel = args[:4]  # location ('cuda:0', 'cpu') is ignored: all on CPU
    if not isinstance(storage_type, _StorageType):
        raise _Refused(f"{storage_type!r} is not a torch storage type")
    if not isinstance(key, str) or type(numel) is not int or numel < 0:
        raise _Corrupt(f"malformed storage id {args!r}")
    element_size = torch.empty(0, dtype=storage_type.dtype).element_size()
    view = args[4] if expected_len == 5 else None
    return storage_type, key, numel * element_size, view


def _read_zip(path: Path) -> Any:
    """torch's zip serialisation: ``<archive>/data.pkl`` plus raw storages in ``<archive>/data/<key>``."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pickles) != 1:
            raise _Corrupt(f"expected one data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder") != b"little":
            raise _Corrupt("big-endian checkpoints are not supported")
        storages: dict[str, _StorageRef] = {}
        archive_size, allocated = path.stat().st_size, [0]

        def load_storage(args: tuple) -> _StorageRef:
            storage_type, key, nbytes, _ = _storage_args(args, 4)
            if key not in storages:
                try:
                    info = archive.getinfo(f"{prefix}data/{key}")
                except KeyError:
                    raise _Corrupt(f"storage {key!r} is missing from the archive") from None
                if info.file_size != nbytes or info.compress_type != zipfile.ZIP_STORED:
                    raise _Corrupt(f"storage {key!r} is not {nbytes} stored (uncompressed) bytes")
                allocated[0] += nbytes
                if allocated[0] > archive_size:  # torch stores storages uncompressed: they fit in the file
                    raise _Corrupt("storages claim more bytes than the whole file")
                storages[key] = _StorageRef.allocate(storage_type.dtype, nbytes)
                with archive.open(info) as stream:
                    storages[key].fill_from(stream)
            return storages[key]

        data = archive.read(pickles[0])
        return RestrictedUnpickler(io.BytesIO(data), load_storage).load()


def _read_legacy(path: Path) -> Any:
    """torch's legacy serialisation: magic, protocol, sys_info, main pickle, storage keys, raw storages."""
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        if RestrictedUnpickler(f).load() != LEGACY_MAGIC_NUMBER:
            raise _Corrupt("not a PyTorch checkpoint (wrong magic number)")
        if RestrictedUnpickler(f).load() != LEGACY_PROTOCOL_VERSION:
            raise _Corrupt("unknown legacy protocol version")
        sys_info = RestrictedUnpickler(f).load()
        if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
            raise _Corrupt("big-endian checkpoints are not supported")
        roots: dict[str, _StorageRef] = {}
        allocated = [0]

        def load_storage(args: tuple) -> _StorageRef:
            storage_type, key, nbytes, view = _storage_args(args, 5)
            if key not in roots:
                allocated[0] += nbytes
                if allocated[0] > file_size:  # every storage's bytes follow in the file
                    raise _Corrupt("storages claim more bytes than the whole file")
                roots[key] = _StorageRef.allocate(storage_type.dtype, nbytes)
            root = roots[key]
            if root.dtype != storage_type.dtype:
                raise _Corrupt(f"storage {key!r} is used with two dtypes")
            if view is None:
                return root
            # (view key, offset, size) in elements of the root storage (PyTorch < 1.0 storage slices)
            _view_key, offset, size = view
            element_size = root.element_size
            if type(offset) is not int or type(size) is not int or offset < 0 or size < 0 \
                    or (offset + size) * element_size > root.nbytes:
                raise _Corrupt(f"storage view {view!r} is outside storage {key!r}")
            return _StorageRef(root.buffer, root.dtype, offset * element_size, size * element_size)

        result = RestrictedUnpickler(f, load_storage).load()
        keys = RestrictedUnpickler(f).load()
        if not isinstance(keys, list):
            raise _Corrupt("storage key list is malformed")
        for key in keys:
            if key not in roots:
                raise _Corrupt(f"storage {key!r} has data but no tensor uses it")
            root = roots[key]
            count = int.from_bytes(f.read(8), "little", signed=True)  # elements, then the raw bytes
            if count * root.element_size != root.nbytes:
                raise _Corrupt(f"storage {key!r} holds {count} elements, expected {root.nbytes // root.element_size}")
            root.fill_from(f)
    missing = [k for k, r in roots.items() if not r.filled]
    if missing:
        raise _Corrupt(f"no data for storages {missing[:4]}")
    return result


def unpickle_checkpoint(path: str | Path) -> Any:
    """The objects in a torch checkpoint (zip or legacy format), rebuilt without running the pickle.

    Tensors come back as CPU tensors (whatever device they were saved from), the known classes as
    :class:`StandIn` records. Raises UnsafeCheckpointError for anything else the pickle names, and
    TutorialCheckpointError for a missing, corrupt or truncated file; both name the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tutorial checkpoint not found: {path}")
    try:
        return _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    except _Refused as exc:
        raise UnsafeCheckpointError(
            f"refused to load {path}: {exc}. Nothing in the file was run; only the tutorial's own "
            "checkpoint (an SSD300, its layers and an SGD optimizer) can be imported"
        ) from None
    except (_Corrupt, pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, RuntimeError, OverflowError, MemoryError, RecursionError, zipfile.BadZipFile) as exc:
        raise TutorialCheckpointError(
            f"corrupt/truncated tutorial checkpoint {path}: {type(exc).__name__}: {exc}"
        ) from None


# --- from stand-ins to our state dict -----------------------------------------------------------------


@dataclass
class TutorialCheckpoint:
    """What the tutorial's file holds that we keep.

    model_state: our SSD300's parameter names -> float32 CPU tensors.
    epoch: the tutorial's epoch counter, if present.
    priors_checked: whether the file carried ``priors_cxcy`` (then checked equal to ours).
    """

    model_state: dict[str, torch.Tensor]
    epoch: int | None
    priors_checked: bool


@cache
def _our_parameter_names() -> tuple[str, ...]:
    # Names do not depend on width or class count: a narrow model lists them cheaply.
    return tuple(SSD300(n_classes=2, width=0.125).state_dict())


def _modules_state(node: StandIn, prefix: str, out: dict[str, torch.Tensor], seen: set[int], path: Path) -> None:
    """Collect ``_parameters`` (and persistent ``_buffers``) of a stand-in module tree into ``out``."""
    if prefix.count(".") > MAX_MODULE_DEPTH:
        raise TutorialCheckpointError(f"{path}: modules nested deeper than {MAX_MODULE_DEPTH} levels")
    if id(node) in seen:
        raise TutorialCheckpointError(f"{path}: module {prefix or 'model'} appears twice in the tree")
    seen.add(id(node))
    non_persistent = node.state.get("_non_persistent_buffers_set") or set()
    for table in ("_parameters", "_buffers"):
        entries = node.state.get(table, {})
        if not isinstance(entries, Mapping):
            raise TutorialCheckpointError(f"{path}: {prefix or 'model'} has a malformed {table}")
        for name, tensor in entries.items():
            if tensor is None or (table == "_buffers" and name in non_persistent):
                continue
            if not isinstance(tensor, torch.Tensor):
                raise TutorialCheckpointError(f"{path}: {prefix}{name} is not a tensor")
            out[f"{prefix}{name}"] = tensor
    children = node.state.get("_modules", {})
    if not isinstance(children, Mapping):
        raise TutorialCheckpointError(f"{path}: {prefix or 'model'} has malformed _modules")
    for name, child in children.items():
        if child is None:
            continue
        if not isinstance(child, StandIn):
            raise TutorialCheckpointError(f"{path}: {prefix}{name} is not a module")
        _modules_state(child, f"{prefix}{name}.", out, seen, path)


def load_tutorial_checkpoint(path: str | Path) -> TutorialCheckpoint:
    """Read the tutorial's ``checkpoint_ssd300.pth.tar`` (either torch format) without running its pickle.

    Only the network's weights are kept (the optimizer and the pooling layers are read as inert
    records and dropped). Raises TutorialCheckpointError naming the file when the file is not a
    ``{'model': SSD300, ...}`` dict, a parameter is missing or extra, or its priors differ from ours.
    """
    path = Path(path)
    payload = unpickle_checkpoint(path)
    model = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(model, StandIn) or model.origin != "model.SSD300":
        found = type(model).__name__ if not isinstance(model, StandIn) else model.origin
        raise TutorialCheckpointError(
            f"{path} is not the tutorial's checkpoint: expected a dict whose 'model' is a model.SSD300, "
            f"found {found if isinstance(payload, dict) else type(payload).__name__}"
        )
    found: dict[str, torch.Tensor] = {}
    _modules_state(model, "", found, set(), path)
    expected = _our_parameter_names()
    missing = [k for k in expected if k not in found]
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        raise TutorialCheckpointError(
            f"{path}: parameters do not match the tutorial's SSD300: missing {missing[:4]}"
            f"{' ...' if len(missing) > 4 else ''}, unexpected {extra[:4]}{' ...' if len(extra) > 4 else ''}"
        )
    bad = [k for k in expected if not found[k].is_floating_point()]
    if bad:
        raise TutorialCheckpointError(f"{path}: parameters {bad[:4]} are not floating point")
    state = {k: found[k].to(torch.float32) for k in expected}
    priors = model.state.get("priors_cxcy")
    if isinstance(priors, torch.Tensor):
        ours = torch.from_numpy(make_priors(PriorConfig()).copy())
        if priors.shape != ours.shape or not torch.allclose(priors.float(), ours, rtol=0, atol=PRIORS_ATOL):
            raise TutorialCheckpointError(
                f"{path}: its priors_cxcy {tuple(priors.shape)} differ from the reference priors this toolkit "
                "generates; the converted model would decode boxes against the wrong priors"
            )
    epoch = payload.get("epoch")
    return TutorialCheckpoint(state, epoch if type(epoch) is int else None, isinstance(priors, torch.Tensor))


def read_tutorial_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tutorial checkpoint's network weights as a state dict in our parameter names (float32, CPU)."""
    return load_tutorial_checkpoint(path).model_state


def convert_tutorial_checkpoint(src: str | Path, dst: str | Path) -> ModelSpec:
    """Convert the tutorial's checkpoint into a toolkit checkpoint (weights only, atomic write).

    The weights are checked to load strictly into ``SSD300(21)`` at width 1.0 (names and shapes);
    the spec is the VOC spec with provenance: source file name and sha256, tutorial epoch.
    Returns the spec written to ``dst``.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"refusing to overwrite the tutorial checkpoint {src} with its conversion: choose another output")
    tutorial = load_tutorial_checkpoint(src)
    spec = ModelSpec.create(VOC_CLASSES, width=1.0).with_provenance(
        converted_from="sgrvinod tutorial",
        source=src.name,
        source_sha256=sha256_file(src),
        tutorial_epoch="unknown" if tutorial.epoch is None else str(tutorial.epoch),
    )
    model = SSD300.from_spec(spec)
    try:
        model.load_state_dict(tutorial.model_state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise TutorialCheckpointError(
            f"{src}: weights do not fit SSD300 with {spec.num_classes} VOC classes: "
            f"{first[1].strip() if len(first) > 1 else first[0]}"
        ) from None
    save_checkpoint(dst, model, spec)
    return spec


__all__ = [
    "RestrictedUnpickler", "StandIn", "TutorialCheckpoint", "TutorialCheckpointError", "UnsafeCheckpointError",
    "convert_tutorial_checkpoint", "load_tutorial_checkpoint", "read_tutorial_checkpoint", "unpickle_checkpoint",
]  # fmt: skip
