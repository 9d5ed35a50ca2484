"""The user's own tools, given as "package.module:function" specs (`custom_tools` in distill.toml)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Sequence

from distill.shared.errors import DistillError


class ToolSetupError(DistillError):
    """A run's tools cannot be built: a custom tool spec that cannot be offered (bad form, import
    failure, not callable, name taken, no schema) or a workspace that is not a folder."""


def load_custom_tool(spec: str) -> Callable[..., object]:
    """Import a user tool given as "package.module:function" (the function may be a dotted attribute)."""
    module_name, sep, attr = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or not module_name or not attr:
        raise ToolSetupError(f"custom tool must look like 'package.module:function', got {spec!r}")
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as e:  # import runs arbitrary module code; any failure means "can't load"
        raise ToolSetupError(f"cannot import module {module_name!r} for tool {spec!r}: "
                              f"{type(e).__name__}: {e}") from e
    for name in attr.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise ToolSetupError(f"module {module_name!r} has no attribute {attr!r} (tool {spec!r})") from None
    if not callable(obj):
        raise ToolSetupError(f"custom tool {spec!r} is not callable")
    return obj


def load_custom_tools(specs: Sequence[str], taken: Collection[str]) -> dict[str, Callable[..., object]]:
    """Each spec's function by the name the teacher calls it (the function's own name).

    Two tools under one name would leave the teacher no way to call one of them: refused, as is a
    name that an offered built-in tool (`taken`) already has.
    """
    loaded: dict[str, Callable[..., object]] = {}
    specs_by_name: dict[str, str] = {}
    for spec in specs:
        function = load_custom_tool(spec)
        name = getattr(function, "__name__", "")
        if not name.isidentifier():
            raise ToolSetupError(f"custom tool {spec!r} has no usable name ({name!r})")
        if name in taken:
            raise ToolSetupError(f"custom tool {spec!r} is named {name!r}, like the built-in tool; "
                                  "rename it or leave the built-in out of limits.builtin_tools")
        if name in loaded:
            raise ToolSetupError(f"custom tools {specs_by_name[name]!r} and {spec!r} are both named {name!r}")
        loaded[name], specs_by_name[name] = function, spec
    return loaded
