"""Check tool-call arguments against the tool's JSON schema.

Uses `jsonschema` when it is installed (it usually is, pulled in by other packages); otherwise a
small built-in check of what matters most for tool calls: JSON types, required keys, enums, and
no unknown keys when the schema forbids them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

HAVE_JSONSCHEMA = importlib.util.find_spec("jsonschema") is not None

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def tool_schemas(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Map tool name -> its parameters schema, for OpenAI-style (or flat) tool definitions."""
    schemas = {}
    for tool in tools:
        function = tool.get("function", tool) if isinstance(tool, Mapping) else {}
        name = function.get("name") if isinstance(function, Mapping) else None
        if isinstance(name, str):
            parameters = function.get("parameters")
            schemas[name] = parameters if isinstance(parameters, dict) else {"type": "object"}
    return schemas


def argument_errors(schema: dict[str, Any], arguments: Any, *, use_jsonschema: bool | None = None) -> list[str]:
    """Problems with `arguments` under `schema`, each a short phrase; empty when they validate."""
    if use_jsonschema is None:
        use_jsonschema = HAVE_JSONSCHEMA
    if use_jsonschema:
        return _jsonschema_errors(schema, arguments)
    return basic_errors(schema, arguments, "arguments")


def _jsonschema_errors(schema: dict[str, Any], arguments: Any) -> list[str]:
    import jsonschema

    try:
        validator_class = jsonschema.validators.validator_for(schema)
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as error:
        return [f"the tool's own schema is invalid: {error.message}"]
    validator = validator_class(schema)
    problems = []
    for issue in sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(part) for part in issue.absolute_path)
        problems.append(f"{where}: {issue.message}" if where else issue.message)
    return problems


def basic_errors(schema: Mapping[str, Any], value: Any, where: str) -> list[str]:
    """The fallback check; recursive over object properties and array items."""
    problems: list[str] = []
    expected = schema.get("type")
    if expected is not None:
        names = expected if isinstance(expected, list) else [expected]
        if not any(_is_type(value, name) for name in names):
            return [f"{where}: expected {' or '.join(map(str, names))}, got {_json_type(value)}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']!r}")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key in schema.get("required") or []:
            if key not in value:
                problems.append(f"{where}: missing required key {key!r}")
        for key, item in value.items():
            if key in properties and isinstance(properties[key], Mapping):
                problems.extend(basic_errors(properties[key], item, f"{where}.{key}"))
            elif schema.get("additionalProperties") is False:
                problems.append(f"{where}: unknown key {key!r}")
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            problems.extend(basic_errors(schema["items"], item, f"{where}[{index}]"))
    return problems


def _is_type(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False  # JSON booleans are not numbers, though Python's bool is an int
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _JSON_TYPES.get(name, object))


def _json_type(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is_type(value, name):
            return name
    return type(value).__name__
