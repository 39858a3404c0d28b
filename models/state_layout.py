"""What a model's pickled state is made of: every class reachable from it, with its attributes.

Checkpoints are stored under :data:`models.bank.STATE_VERSION`, and a worker only restores
state of its own version. :func:`layout` describes a trained model as ``{class: {attribute:
[value types]}}`` over every object reachable from it (values of the same attribute on many
instances are merged). ``tests/test_state_layout.py`` compares the layout of reference models
with the one recorded for the current version, so a change to what a model pickles -- a new
attribute, a renamed one, a list that became a deque, another River version -- fails the
suite until ``STATE_VERSION`` is bumped and the layout recorded again.

>>> from models.state_layout import layout
>>> class Window:
...     def __init__(self):
...         self.size = 3
...         self.values = [1.0, 2.0]
...         self.last = None
>>> layout(Window())
{'models.state_layout.Window': {'last': ['NoneType'], 'size': ['number'], 'values': ['list']}}
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np

#: Values whose type is recorded but whose contents are data, not structure.
LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None), np.ndarray, np.generic, memoryview)
#: Values recorded by name only (pickled by reference).
REFERENCES = (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType)


def type_name(value: Any) -> str:
    """``module.qualname`` of the value's type; builtins by their bare name; every real
    number (int, float, bool, numpy scalar) is ``number``, as they unpickle alike."""
    if isinstance(value, (int, float, np.number, np.bool_)):
        return "number"
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _attributes(obj: Any) -> dict[str, Any] | None:
    """The attributes pickle stores for ``obj`` (its ``__getstate__``), or None if it stores none by name."""
    state = obj.__getstate__()
    if isinstance(state, tuple) and len(state) == 2:  # (__dict__ or None, slots)
        return {**(state[0] or {}), **(state[1] or {})}
    if isinstance(state, dict):
        return state
    return {} if state is None and hasattr(obj, "__dict__") else None


def layout(model: Any) -> dict[str, dict[str, list[str]]]:
    """``{class: {attribute: sorted value types}}`` of every object reachable from ``model``."""
    classes: dict[str, dict[str, set[str]]] = {}
    seen: set[int] = set()
    stack = [model]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, LEAVES + REFERENCES):
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            stack.extend(obj.values())
            continue
        if isinstance(obj, (list, tuple, set, frozenset)) or type(obj).__module__ == "collections":
            stack.extend(obj.values() if isinstance(obj, dict) else obj)
            continue
        attributes = _attributes(obj)
        if attributes is None:
            continue
        record = classes.setdefault(type_name(obj), {})
        for name, value in attributes.items():
            record.setdefault(name, set()).add(type_name(value))
            stack.append(value)
    return {cls: {name: sorted(kinds) for name, kinds in sorted(attrs.items())} for cls, attrs in sorted(classes.items())}
