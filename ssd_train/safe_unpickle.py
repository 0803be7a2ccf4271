"""Read untrusted PyTorch checkpoints (zip and legacy formats) without running their pickles.

``torch.load(weights_only=False)`` runs whatever a pickle names; ``weights_only=True`` cannot read files
that pickle whole objects (modules, optimizers, a training script's classes). This module reads both,
with a restricted unpickler whose allow-list the caller gives:

* tensors, parameters and plain containers are rebuilt by our own functions (never torch's or the
  file's), as bounds-checked CPU tensors on storages we read ourselves (:mod:`ssd_train.torch_formats`:
  legacy stream or zip archive);
* the allowed classes (``allowed_classes``: qualified names such as ``"model.SSD300"``; any class in
  ``standin_packages`` such as ``"torch.nn.modules."``) become inert :class:`StandIn` records of the
  ``__dict__`` the pickle gives them; nothing is imported;
* every other global (``os.system``, ``builtins.eval``, ``subprocess.*``, classes not allowed) is refused
  when the pickle names it, before anything could call it; so are opcodes that would call or build
  anything but our functions and stand-ins. Allowing a name only ever yields an inert stand-in, which
  is never called: even an allowed ``os.system`` cannot run.

For example, ``unpickle_checkpoint("run.pt", allowed_classes={"train.Config"},
standin_packages=("torch.nn.modules.",))`` returns the file's dicts and tensors, with ``train.Config``
objects and torch layers as stand-ins (``.origin``: the class name, ``.state``: their attributes).
See ``docs/reference.md``, section "Loading untrusted files".
"""
from __future__ import annotations

import _compat_pickle
import io
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch

from ssd_train.checkpoint import CheckpointError
from ssd_train.torch_formats import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    STORAGE_DTYPES,
    Corrupt,
    Refused,
    StorageRef,
    StorageType,
    read_legacy,
    read_zip,
)


class CorruptCheckpointError(CheckpointError):
    """The file is not a readable torch checkpoint: truncated, malformed, big-endian or inconsistent."""


class UnsafeCheckpointError(CheckpointError):
    """The file's pickle names something other than tensors, containers and the allowed classes."""


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
        raise Refused(f"refused to create an object of {cls!r}: only allowed classes are rebuilt, as stand-ins")
    obj = object.__new__(cls)
    obj.state = {}
    return obj


class _Marker:
    """A pickled global that may only be an argument (``builtins.object``, ``builtins.dict``)."""

    def __init__(self, name: str) -> None:
        self.name = name


_OBJECT = _Marker("builtins.object")
_DICT_TYPE = _Marker("builtins.dict")


# --- safe rebuild functions (the only callables a pickle can reach) -----------------------------------


def _check_ints(name: str, values: Any) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or not all(type(v) is int and v >= 0 for v in values):
        raise Corrupt(f"tensor {name} must be non-negative integers, got {values!r}")
    return tuple(values)


def _rebuild_tensor(
    storage: Any, storage_offset: Any, size: Any, stride: Any,
    requires_grad: Any = False, backward_hooks: Any = None, metadata: Any = None,
) -> torch.Tensor:  # fmt: skip
    """``torch._utils._rebuild_tensor_v2``'s arguments -> a CPU tensor on ``storage`` (bounds-checked)."""
    if not isinstance(storage, StorageRef):
        raise Refused(f"a tensor must be rebuilt from a storage, got {type(storage).__name__}")
    if backward_hooks or metadata:
        raise Refused("tensors with backward hooks or metadata are not rebuilt")
    (offset,) = _check_ints("offset", [storage_offset])
    size, stride = _check_ints("size", size), _check_ints("stride", stride)
    if len(size) != len(stride):
        raise Corrupt(f"tensor size {size} and stride {stride} differ in length")
    element_size = storage.element_size
    capacity = storage.nbytes // element_size
    if 0 not in size and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= capacity:
        raise Corrupt(f"tensor of size {size} at offset {offset} reaches past its storage of {capacity} elements")
    base_offset, remainder = divmod(storage.byte_offset, element_size)
    if remainder:
        raise Corrupt("storage view is not aligned to its element size")
    tensor = torch.empty(0, dtype=storage.dtype)
    return tensor.set_(storage.buffer.untyped_storage(), base_offset + offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = True, backward_hooks: Any = None, state: Any = None) -> torch.Tensor:
    """``Parameter(data, requires_grad)`` (PyTorch 0.4) or ``_rebuild_parameter[_with_state]`` -> the tensor."""
    if not isinstance(data, torch.Tensor):
        raise Refused(f"a parameter must wrap a tensor, got {type(data).__name__}")
    if backward_hooks or not isinstance(state, (dict, type(None))):
        raise Refused("parameters with hooks or non-dict state are not rebuilt")
    return data  # the weights are all we keep


def _ordered_dict(items: Any = ()) -> OrderedDict:
    if not isinstance(items, (list, tuple)):
        raise Refused(f"OrderedDict from {type(items).__name__} is not rebuilt")
    return OrderedDict(items)


def _plain_dict(factory: Any = None) -> dict:
    """``collections.defaultdict(factory)`` -> a plain dict: the factory is never called."""
    return {}


def _set(items: Any = ()) -> set:
    if not isinstance(items, (list, tuple)):
        raise Refused(f"set from {type(items).__name__} is not rebuilt")
    return set(items)


def _frozenset(items: Any = ()) -> frozenset:
    return frozenset(_set(items))


def _reconstructor(cls: Any, base: Any, state: Any) -> StandIn:
    """``copyreg._reconstructor`` (pickle protocols 0 and 1), for stand-ins over ``object`` only."""
    if base is not _OBJECT or state is not None:
        raise Refused("copyreg._reconstructor is only allowed as object.__new__(stand-in)")
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
    """Unpickles tensors, parameters, plain containers and stand-ins of allowed classes; refuses the rest.

    allowed_classes: qualified names (``"module.Class"``) that become :class:`StandIn` subclasses.
    standin_packages: module prefixes (``"torch.nn.modules."``; end with a dot to mean a package)
        whose classes become stand-ins too.
    load_storage: receives the persistent id of each storage (without the leading ``'storage'``)
        and returns a :class:`StorageRef`; ``None`` refuses storages (for the header pickles).
    standins: the stand-in classes made so far, by qualified name (shared between unpicklers).
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(
        self, file: io.BufferedIOBase, *, allowed_classes: Iterable[str] = (), standin_packages: Iterable[str] = (),
        load_storage: Callable[[tuple], StorageRef] | None = None, standins: dict[str, type] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(file, encoding="utf-8")
        self._allowed_classes = _names("allowed_classes", allowed_classes)
        self._standin_packages = tuple(_names("standin_packages", standin_packages))
        self._load_storage = load_storage
        self._standins = {} if standins is None else standins

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3:  # Python 2 names (__builtin__, copy_reg)
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module in ("torch", "torch.storage") and name in STORAGE_DTYPES:
            return StorageType(name, STORAGE_DTYPES[name])
        key = f"{module}.{name}"
        allowed = key in self._allowed_classes or module.startswith(self._standin_packages)
        if not (allowed and name.isidentifier()):
            raise Refused(f"it references {key}, which is not a tensor, parameter, container or an allowed class")
        if key not in self._standins:
            self._standins[key] = type(name, (StandIn,), {"origin": key, "__module__": __name__})
        return self._standins[key]

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise Corrupt(f"unexpected persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module" and len(pid) == 4:  # legacy: ('module', class, source file, source)
            return self._check_standin_class(pid[1])
        if kind == "storage" and self._load_storage is not None:
            return self._load_storage(pid[1:])
        raise Refused(f"unexpected persistent id of kind {kind!r}")

    @staticmethod
    def _check_standin_class(cls: Any) -> type:
        if not (isinstance(cls, type) and issubclass(cls, StandIn)):
            raise Refused(f"{cls!r} is not an allowed class")
        return cls

    # Opcodes that call or build things: only our rebuild functions and stand-ins.
    def _load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if not any(func is f for f in _CALLABLES) or not isinstance(args, tuple):
            raise Refused(f"refused to call {func!r}: only tensors, parameters and containers are rebuilt")
        self.stack[-1] = func(*args)

    def _load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if args:
            raise Refused(f"refused to create {cls!r} with arguments")
        self.append(_new_standin(cls))

    def _load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if args or kwargs:
            raise Refused(f"refused to create {cls!r} with arguments")
        self.append(_new_standin(cls))

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, StandIn):
            raise Refused(f"refused to set the state of a {type(inst).__name__}: only stand-ins take state")
        slotstate = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slotstate = state
        for part in (state, slotstate):
            if part is None:
                continue
            if not isinstance(part, dict) or not all(isinstance(k, str) for k in part):
                raise Refused(f"refused state of type {type(part).__name__} for {inst.origin}")
            inst.state.update(part)

    def _refuse_opcode(self) -> None:
        raise Refused("it uses pickle opcodes for old-style instances or extension codes")

    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.NEWOBJ[0]] = _load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex
    dispatch[pickle.BUILD[0]] = _load_build
    for _opcode in (pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_opcode[0]] = _refuse_opcode
    del _opcode


# --- reading a file -----------------------------------------------------------------------------------


def unpickle_checkpoint(
    path: str | Path, *, allowed_classes: Iterable[str] = (), standin_packages: Iterable[str] = (),
    what: str = "checkpoint",
) -> Any:  # fmt: skip
    """The objects in a torch checkpoint (zip or legacy format), rebuilt without running the pickle.

    Tensors come back as CPU tensors (whatever device they were saved from), parameters as tensors,
    containers as dicts/lists/tuples/sets, and the allowed classes (see :class:`RestrictedUnpickler`)
    as :class:`StandIn` records. ``what`` names the file in messages (e.g. ``"tutorial checkpoint"``).
    Raises FileNotFoundError for a missing file, UnsafeCheckpointError for anything else the pickle
    names, and CorruptCheckpointError for a corrupt or truncated file; both name the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    unpickler = partial(  # checked here, so that a wrong argument is not reported as a corrupt file
        RestrictedUnpickler, allowed_classes=_names("allowed_classes", allowed_classes),
        standin_packages=_names("standin_packages", standin_packages),
    )  # fmt: skip
    try:
        return read_zip(path, unpickler) if zipfile.is_zipfile(path) else read_legacy(path, unpickler)
    except Refused as exc:
        raise UnsafeCheckpointError(f"refused to load {path}: {exc}. Nothing in the file was run") from None
    except (Corrupt, pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, RuntimeError, OverflowError, MemoryError, RecursionError, zipfile.BadZipFile) as exc:
        raise CorruptCheckpointError(f"corrupt/truncated {what} {path}: {type(exc).__name__}: {exc}") from None


def _names(argument: str, names: Iterable[str]) -> frozenset[str]:
    """``names`` as a set of strings; one bare string (a common slip) is refused, not split into letters."""
    found = frozenset(names) if not isinstance(names, str) else None
    if found is None or not all(isinstance(name, str) for name in found):
        raise TypeError(f"{argument} must be a collection of names (strings), got {names!r}")
    return found


__all__ = [
    "LEGACY_MAGIC_NUMBER", "LEGACY_PROTOCOL_VERSION", "CorruptCheckpointError", "RestrictedUnpickler", "StandIn",
    "UnsafeCheckpointError", "unpickle_checkpoint",
]  # fmt: skip
