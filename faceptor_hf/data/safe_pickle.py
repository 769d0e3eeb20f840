"""Loading a pickle that may hold only plain data: bytes, lists, tuples and bools — nothing is imported or called.

A pickle is a small program; ``pickle.load`` on an untrusted file can import and call anything. This loader
never lets it:

1. Before anything is built, ``pickletools.genops`` walks the opcodes without executing them. Every opcode must be
   one that builds bytes (Python 3 ``BINBYTES``…, or Python 2 ``str``: ``STRING``/``BINSTRING``…), a list, a
   tuple or a bool (``NEWTRUE``/``NEWFALSE``, or protocol 0/1's ``INT`` written as ``01``/``00``), or the protocol's
   bookkeeping (``PROTO``, ``FRAME``, ``MARK``, memo ``PUT``/``GET``, ``STOP``). An opcode that imports or calls
   (``GLOBAL``, ``STACK_GLOBAL``, ``REDUCE``, ``BUILD``, ``INST``, ``OBJ``, ``NEWOBJ``, extension codes,
   persistent ids) stops the walk at once and is reported with the global's name where the pickle spells it;
   any other object (str, int, float, None, dict, set, …) is reported after the walk.
2. Only then is the file unpickled, by an ``Unpickler`` whose ``find_class`` and ``persistent_load`` refuse
   everything (a second lock, should the walk ever miss something), with ``encoding="bytes"`` so that Python 2
   ``str`` objects come back as ``bytes``.

A Python 3 pickle of bytes written with protocol 0, 1 or 2 spells each bytes object as a call to
``_codecs.encode``; such files are refused like any other call (re-save them with protocol 3 or later).
"""

from __future__ import annotations

import pickle
import pickletools

from .errors import DatasetFormatError

DATA_OPCODES = frozenset({
    "PROTO", "FRAME", "STOP", "MARK",
    "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
    "EMPTY_LIST", "LIST", "APPEND", "APPENDS",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "NEWTRUE", "NEWFALSE",
    "SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "STRING", "BINSTRING", "SHORT_BINSTRING",
})
# Protocols 0 and 1 write True/False as INT with the text 01/00 (pickletools decodes those to bools).
BOOL_INT_OPCODE = "INT"
CODE_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD", "EXT1",
                          "EXT2", "EXT4", "PERSID", "BINPERSID"})
_TEXT_OPCODES = frozenset({"UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"})


class _RefuseEverything(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refused a reference to global {module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"refused persistent id {pid!r}")


def _code_description(opcode, argument, recent_text: list) -> str:
    if opcode.name in ("GLOBAL", "INST"):
        return f"a reference to global {'.'.join(str(argument).split(' ', 1))} ({opcode.name})"
    if opcode.name == "STACK_GLOBAL" and len(recent_text) == 2:
        return f"a reference to global {recent_text[0]}.{recent_text[1]} (STACK_GLOBAL)"
    if opcode.name == "STACK_GLOBAL":
        return "a reference to a global (STACK_GLOBAL)"
    if opcode.name.startswith("EXT"):
        return f"a reference to extension-registry code {argument} ({opcode.name})"
    if opcode.name in ("PERSID", "BINPERSID"):
        return f"a persistent id ({opcode.name})"
    return f"a call or object construction ({opcode.name})"


def _data_description(opcode, argument) -> str:
    built = ", ".join(item.name for item in opcode.stack_after) or "nothing"
    shown = f" {argument!r}" if isinstance(argument, (int, float, str)) and len(repr(argument)) <= 40 else ""
    return f"opcode {opcode.name}{shown} (builds {built})"


def check_data_opcodes(path: str):
    """Walk the pickle's opcodes without executing any; raise ``DatasetFormatError`` naming the file, the byte
    position and what was found at the first code opcode, or else at the first disallowed data opcode."""
    first_refused = None
    recent_text: list = []
    with open(path, "rb") as handle:
        try:
            for opcode, argument, position in pickletools.genops(handle):
                if opcode.name in CODE_OPCODES:
                    raise DatasetFormatError(f"refused {_code_description(opcode, argument, recent_text)}; only bytes, "
                                             "lists, tuples and bools are accepted and nothing was executed", path,
                                             f"byte {position}")
                if opcode.name in _TEXT_OPCODES:
                    recent_text = (recent_text + [argument])[-2:]
                elif opcode.name not in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                    recent_text = []
                allowed = opcode.name in DATA_OPCODES or (opcode.name == BOOL_INT_OPCODE and isinstance(argument, bool))
                if not allowed and first_refused is None:
                    first_refused = (_data_description(opcode, argument), position)
        except ValueError as error:  # pickletools' report of a truncated or malformed opcode stream
            raise DatasetFormatError(f"not a complete pickle ({error})", path) from None
    if first_refused is not None:
        found, position = first_refused
        raise DatasetFormatError(f"refused {found}; only bytes, lists, tuples and bools are accepted", path,
                                 f"byte {position}")


def load_data_pickle(path: str):
    """The object in the pickle file ``path``, which may be built only of bytes, lists, tuples and bools.

    Raises ``DatasetFormatError`` naming the file (and the byte position) for anything else, before building it.
    """
    check_data_opcodes(path)
    with open(path, "rb") as handle:
        try:
            return _RefuseEverything(handle, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            raise DatasetFormatError(f"cannot be unpickled as plain data ({error})", path) from None


__all__ = ["CODE_OPCODES", "DATA_OPCODES", "check_data_opcodes", "load_data_pickle"]
