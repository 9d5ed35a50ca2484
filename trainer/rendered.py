"""Rendered chat text back to messages: mlx-lm's `{"text": ...}` lines, read as conversations.

Many datasets hold conversations already rendered with a chat template. Each family's markers
are parsed back into OpenAI-format messages (and the tool schemas, where the template wrote a
tools section), so those lines can be repaired and converted like any chat line. A text that
fits no family is refused with the families tried. Parsing is strict: text outside the family's
turns, an unknown role, or a tool call that is not JSON makes the line fit no family, rather than
be read as something it is not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from distill.shared.reasoning import split_thinking


class NotThisFamily(ValueError):
    """The text is not (exactly) in this family's format."""


# --- ChatML: Qwen2.5, Qwen3, SmolLM2 ------------------------------------------------------------

_CHATML_TURN = re.compile(r"<\|im_start\|>(system|user|assistant|tool)\n?(.*?)<\|im_end\|>\s*", re.DOTALL)
_TOOLS_SECTION = re.compile(r"\n*# Tools\n\n.*?<tools>\n(.*?)\n</tools>.*\Z", re.DOTALL)
_TOOL_CALL = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", re.DOTALL)
_TOOL_RESPONSE = re.compile(r"\s*<tool_response>\n(.*?)\n</tool_response>", re.DOTALL)


def parse_chatml(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    messages: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    position = 0
    for turn in _CHATML_TURN.finditer(text):
        if text[position:turn.start()].strip():
            raise NotThisFamily(f"text outside the turns at character {position}")
        position = turn.end()
        role, body = turn.group(1), turn.group(2)
        if role == "system":
            section = _TOOLS_SECTION.search(body)
            if section is not None:
                tools = [_json_object(line, "tool schema") for line in section.group(1).splitlines() if line.strip()]
                body = body[:section.start()]
            messages.append({"role": "system", "content": body})
        elif role == "user" and body.lstrip().startswith("<tool_response>"):
            messages.extend({"role": "tool", "content": content} for content in _tool_responses(body))
        elif role == "assistant":
            messages.append(_chatml_assistant(body))
        else:
            messages.append({"role": role, "content": body})
    if not messages or text[position:].strip():
        raise NotThisFamily("no ChatML turns" if not messages else f"text outside the turns at character {position}")
    return messages, tools


def _tool_responses(body: str) -> list[str]:
    responses, position = [], 0
    for match in _TOOL_RESPONSE.finditer(body):
        if body[position:match.start()].strip():
            raise NotThisFamily("text between tool responses")
        responses.append(match.group(1))
        position = match.end()
    if body[position:].strip():
        raise NotThisFamily("text after the tool responses")
    return responses


def _chatml_assistant(body: str) -> dict[str, Any]:
    reasoning, body = split_thinking(body)
    body = body or ""
    calls = []
    first = body.find("<tool_call>")
    content = body if first < 0 else body[:first]
    for match in _TOOL_CALL.finditer(body):
        call = _json_object(match.group(1), "tool call")
        if not isinstance(call.get("name"), str):
            raise NotThisFamily("a tool call without a name")
        calls.append({"type": "function", "function": {"name": call["name"], "arguments": call.get("arguments", {})}})
    if first >= 0 and _TOOL_CALL.sub("", body[first:]).strip():
        raise NotThisFamily("text between tool calls")
    message: dict[str, Any] = {"role": "assistant", "content": content.rstrip("\n") if calls else content}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = reasoning
    return message


# --- Llama 3.x ------------------------------------------------------------------------------

_LLAMA_TURN = re.compile(r"<\|start_header_id\|>(system|user|assistant|ipython|tool)<\|end_header_id\|>\n\n(.*?)"
                         r"<\|(?:eot_id|eom_id)\|>", re.DOTALL)
_LLAMA_SYSTEM_HEADER = re.compile(r"\A(Environment: ipython\n)?Cutting Knowledge Date: [^\n]*\nToday Date: [^\n]*\n\n")
_LLAMA_TOOLS_PREAMBLE = re.compile(
    r"\AGiven the following functions, please respond with a JSON for a function call with its proper arguments "
    r"that best answers the given prompt\.\n\nRespond in the format \{\"name\": function name, \"parameters\": "
    r"dictionary of argument name and its value\}\.Do not use variables\.\n\n")


def parse_llama3(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    body = text.removeprefix("<|begin_of_text|>")
    messages: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    position = 0
    for turn in _LLAMA_TURN.finditer(body):
        if body[position:turn.start()].strip():
            raise NotThisFamily(f"text outside the turns at character {position}")
        position = turn.end()
        role, content = turn.group(1), turn.group(2)
        if role == "system":
            content = _LLAMA_SYSTEM_HEADER.sub("", content, count=1)
            if content:
                messages.append({"role": "system", "content": content})
        elif role == "user" and _LLAMA_TOOLS_PREAMBLE.match(content):
            schemas, content = _llama_tools(content[_LLAMA_TOOLS_PREAMBLE.match(content).end():])  # type: ignore[union-attr]
            tools.extend(schemas)
            messages.append({"role": "user", "content": content})
        elif role in ("ipython", "tool"):
            messages.append({"role": "tool", "content": _unquoted(content)})
        elif role == "assistant":
            messages.append(_llama_assistant(content, tools))
        else:
            messages.append({"role": role, "content": content})
    if not messages or body[position:].strip():
        raise NotThisFamily("no Llama 3 turns" if not messages else f"text outside the turns at character {position}")
    return messages, tools


def _llama_tools(text: str) -> tuple[list[dict[str, Any]], str]:
    """The schemas the template wrote (indented JSON, a blank line after each), then the user's text."""
    decoder = json.JSONDecoder()
    schemas, position = [], 0
    while text[position:].startswith("{"):
        try:
            schema, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            break
        schemas.append(schema)
        position = end + 2 if text[end:end + 2] == "\n\n" else end
    return schemas, text[position:]


def _llama_assistant(content: str, tools: list[dict[str, Any]]) -> dict[str, Any]:
    names = {tool.get("function", {}).get("name") for tool in tools}
    try:
        call = json.loads(content)
    except json.JSONDecodeError:
        call = None
    if isinstance(call, dict) and set(call) == {"name", "parameters"} and call["name"] in names:
        return {"role": "assistant", "content": "",
                "tool_calls": [{"type": "function", "function": {"name": call["name"], "arguments": call["parameters"]}}]}
    reasoning, answer = split_thinking(content)
    message: dict[str, Any] = {"role": "assistant", "content": answer or ""}
    if reasoning:
        message["reasoning_content"] = reasoning
    return message


def _unquoted(content: str) -> str:
    """Llama's template writes a string tool result through tojson: read it back as the string."""
    if content.startswith('"') and content.endswith('"'):
        try:
            value = json.loads(content)
        except json.JSONDecodeError:
            return content
        if isinstance(value, str):
            return value
    return content


# --- Gemma 3 -------------------------------------------------------------------------------

_GEMMA_TURN = re.compile(r"<start_of_turn>(user|model)\n(.*?)<end_of_turn>\s*", re.DOTALL)


def parse_gemma3(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    body = text.removeprefix("<bos>")
    messages: list[dict[str, Any]] = []
    position = 0
    for turn in _GEMMA_TURN.finditer(body):
        if body[position:turn.start()].strip():
            raise NotThisFamily(f"text outside the turns at character {position}")
        position = turn.end()
        role = "assistant" if turn.group(1) == "model" else "user"
        message: dict[str, Any] = {"role": role, "content": turn.group(2)}
        if role == "assistant":
            reasoning, answer = split_thinking(turn.group(2))
            message["content"] = answer or ""
            if reasoning:
                message["reasoning_content"] = reasoning
        messages.append(message)
    if not messages or body[position:].strip():
        raise NotThisFamily("no Gemma turns" if not messages else f"text outside the turns at character {position}")
    return messages, []


# --- Mistral (v0.3 tool format) ------------------------------------------------------------------

_MISTRAL_PART = re.compile(
    r"(?:\[AVAILABLE_TOOLS\] (?P<tools>\[.*?\])\[/AVAILABLE_TOOLS\])?\[INST\] (?P<user>.*?)\[/INST\]"
    r"|\[TOOL_CALLS\] (?P<calls>\[.*?\])</s>"
    r"|\[TOOL_RESULTS\] \{\"content\": (?P<result>.*?), \"call_id\": \"(?P<call_id>[A-Za-z0-9]{9})\"\}\[/TOOL_RESULTS\]"
    r"|(?P<answer> .*?)</s>",
    re.DOTALL,
)


def parse_mistral(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    body = text.removeprefix("<s>")
    messages: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    position = 0
    while position < len(body):
        part = _MISTRAL_PART.match(body, position)
        if part is None:
            raise NotThisFamily(f"unknown text at character {position}")
        position = part.end()
        if part.group("user") is not None:
            if part.group("tools"):
                tools = json.loads(part.group("tools"))
            messages.append({"role": "user", "content": part.group("user")})
        elif part.group("calls") is not None:
            calls = json.loads(part.group("calls"))
            messages.append({"role": "assistant", "content": "", "tool_calls": [
                {"id": call.get("id"), "type": "function",
                 "function": {"name": call["name"], "arguments": call.get("arguments", {})}} for call in calls]})
        elif part.group("call_id") is not None:
            messages.append({"role": "tool", "tool_call_id": part.group("call_id"), "content": part.group("result")})
        else:
            messages.append({"role": "assistant", "content": part.group("answer")[1:]})
    if not messages:
        raise NotThisFamily("no Mistral turns")
    return messages, tools


# --- any family --------------------------------------------------------------------------

FAMILIES: dict[str, Callable[[str], tuple[list[dict[str, Any]], list[dict[str, Any]]]]] = {
    "ChatML (Qwen2.5, Qwen3, SmolLM2)": parse_chatml,
    "Llama 3": parse_llama3,
    "Mistral": parse_mistral,
    "Gemma 3": parse_gemma3,
}


def is_rendered_text(data: dict[str, Any]) -> bool:
    """mlx-lm's text format: a rendered conversation under "text", nothing of distill's or chat's."""
    return "schema_version" not in data and "messages" not in data and isinstance(data.get("text"), str)


def parse_rendered(text: str) -> dict[str, Any]:
    """A `{"messages", "tools"}` chat line from rendered text, or NotThisFamily naming the families tried."""
    reasons = []
    for family, parse in FAMILIES.items():
        try:
            messages, tools = parse(text)
        except (NotThisFamily, json.JSONDecodeError, KeyError, TypeError, AttributeError) as problem:
            reasons.append(f"{family}: {problem}")
            continue
        line: dict[str, Any] = {"messages": messages}
        if tools:
            line["tools"] = tools
        return line
    raise NotThisFamily("fits no known chat format (tried " + "; ".join(reasons) + ")")


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise NotThisFamily(f"a {what} that is not JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise NotThisFamily(f"a {what} that is not a JSON object")
    return value
