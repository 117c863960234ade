"""A pickle module for `torch.load(..., pickle_module=)` that reads a training framework's checkpoint without
importing or calling anything outside an allow-list.

Training frameworks pickle their own objects beside the weights (mmengine's `message_hub` HistoryBuffers, optimizer
and scheduler state, numpy scalars): `torch.load(weights_only=True)` refuses the whole file for them, and a plain
`torch.load` would import their modules and run whatever the file asks. Here every global the file names goes
through `Unpickler.find_class`: torch's own tensor and storage rebuild functions, dtypes and plain containers
(torch's weights-only allow-list) are returned; any other becomes an `Inert` class made on the spot, whose
instances are built without running anything of the file's: no constructor, no `__setstate__`, item and list
writes dropped. The file's tensors and plain data come back; its foreign objects as empty placeholders.
"""

from __future__ import annotations

import codecs
import pickle
from collections import Counter, OrderedDict
from typing import IO, Any, ClassVar

# plain containers and values a checkpoint's metadata pickles by reference
_PLAIN: dict[str, object] = {
    "builtins.set": set, "builtins.frozenset": frozenset, "builtins.complex": complex,
    "builtins.bytearray": bytearray, "builtins.slice": slice, "collections.OrderedDict": OrderedDict,
    "collections.Counter": Counter,
}


def allowed_globals() -> dict[str, object]:
    """'module.name' -> object: torch's weights-only allow-list (its rebuild functions, dtypes, storages,
    torch.Size, Parameter) and the plain containers above. Nothing is imported to build it."""
    import torch._weights_only_unpickler as weights_only

    found: dict[str, object] = {}
    listing = getattr(weights_only, "_get_allowed_globals", None)
    if callable(listing):
        found.update({str(k): v for k, v in listing().items()})
    else:  # a torch without the private listing: its rebuild functions by hand
        import torch._utils

        found.update({f"torch._utils.{n}": getattr(torch._utils, n) for n in dir(torch._utils)
                      if n.startswith("_rebuild_")})
        found.update({"torch.Size": torch.Size, "torch.device": torch.device,
                      "torch.nn.parameter.Parameter": torch.nn.Parameter, "_codecs.encode": codecs.encode})
    found.update(_PLAIN)
    return found


class Inert:
    """What a global outside the allow-list becomes: a class whose instances hold nothing and run nothing
    (REDUCE, NEWOBJ and BUILD on it do nothing; SETITEMS and APPENDS are dropped)."""

    unpickled_name: ClassVar[str] = "?"
    __slots__ = ()

    def __new__(cls, *args: object, **kwargs: object) -> Inert:
        return object.__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass

    def append(self, item: object) -> None:
        pass

    def extend(self, items: object) -> None:
        pass

    def __repr__(self) -> str:
        return f"<inert {self.unpickled_name}>"


class Unpickler(pickle.Unpickler):
    """pickle's Unpickler whose globals come from `allowed_globals()` or are `Inert` stand-ins (never imported)."""

    def __init__(self, file: IO[bytes], **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._allowed = allowed_globals()
        self._stand_ins: dict[str, type[Inert]] = {}

    def find_class(self, module: str, name: str) -> Any:
        # protocol 2 (torch.save's) names Python 2's module of the builtins; pickle maps it only in the
        # find_class this replaces
        dotted = f"{'builtins' if module == '__builtin__' else module}.{name}"
        if dotted in self._allowed:
            return self._allowed[dotted]
        if dotted not in self._stand_ins:
            self._stand_ins[dotted] = type("Inert_" + name.replace(".", "_"), (Inert,),
                                           {"__slots__": (), "unpickled_name": dotted, "__module__": __name__})
        return self._stand_ins[dotted]


def load(file: IO[bytes], **kwargs: Any) -> Any:
    """pickle.load through the restricted Unpickler (torch's legacy format reads its header with it)."""
    return Unpickler(file, **kwargs).load()
