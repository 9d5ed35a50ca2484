"""The wire to one teacher: Chat Completions over one long-lived aiohttp session.

pydantic-ai's `OpenAIChatModel` stays in charge of the conversation (message mapping, response
validation, error mapping); only the transport underneath it changes. The openai SDK re-walks every
request against its TypedDicts (`_transform`) and sends it through httpx2's pool: profiled, that was
about 60% of a worker's CPU per request, more than the agent loop itself (bench/README.md, figure 3).
Here the arguments pydantic-ai passes go to the wire as they are, and failures are raised as the
SDK's own exception types, so pydantic-ai maps them exactly as it maps the SDK's.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import aiohttp
import httpx2
from openai import APIConnectionError, APITimeoutError, AsyncOpenAI, NotGiven, Omit
from openai.types.chat import ChatCompletion

# Arguments of `create()` that shape the HTTP call rather than the JSON body.
_TRANSPORT_ARGS = ("extra_headers", "extra_query", "extra_body", "timeout")

# Holds one of the teacher's slots (the global cap) for one request: worker.pool.Seat.request.
Slot = Callable[[], AbstractAsyncContextManager[None]]


@dataclass
class Exchanges:
    """One conversation's requests on the wire: the slot held around each, and the time they took."""

    slot: Slot | None = None
    seconds: float = 0.0
    count: int = 0


# The transport is shared by all of a worker's conversations, each running in its own task; the
# conversation a request belongs to rides along in the task's context. So its slot is held around
# the HTTP exchange alone, never while pydantic-ai builds or reads a message: a slot handed to the
# next request goes out at once, and the teacher is not left idle for the client's CPU time.
current_exchanges: ContextVar[Exchanges | None] = ContextVar("distill_exchanges", default=None)


class LeanOpenAI(AsyncOpenAI):
    """An `AsyncOpenAI` whose `chat.completions.create` posts straight to the endpoint.

    Everything else (base_url, api_key, the error classes) is the SDK's. Streaming and the other
    endpoints are not used by distill and are not offered.
    """

    def __init__(self, *, base_url: str, api_key: str, timeout_s: float) -> None:
        super().__init__(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
        self.timeout_s = timeout_s
        self.sent_tools: list[dict[str, Any]] | None = None
        self._session: aiohttp.ClientSession | None = None

    @cached_property
    def chat(self) -> _Chat:  # type: ignore[override]
        return _Chat(self)

    def session(self) -> aiohttp.ClientSession:
        # Made on first use, inside the event loop that will drive it (an actor's, a test's).
        if self._session is None or self._session.closed:
            # No connection cap here: the teacher pool's leases already bound what is in flight.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def post_chat(self, params: dict[str, Any]) -> ChatCompletion | str:
        body = {k: v for k, v in params.items() if k not in _TRANSPORT_ARGS and not isinstance(v, Omit | NotGiven)}
        extra_body = params.get("extra_body")
        if isinstance(extra_body, dict):
            body.update(extra_body)
        if body.get("stream"):
            raise NotImplementedError("distill's teacher transport does not stream")
        body.pop("stream", None)
        if self.sent_tools is None and body.get("tools"):
            # The record keeps the tool block exactly as the teacher saw it (what the student is served).
            self.sent_tools = json.loads(json.dumps(body["tools"]))
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json",
                   "Accept": "application/json"}
        extra_headers = params.get("extra_headers")
        if isinstance(extra_headers, dict):
            headers.update({k: v for k, v in extra_headers.items() if isinstance(v, str)})
        url = f"{str(self.base_url).rstrip('/')}/chat/completions"
        timeout = params.get("timeout")
        seconds = timeout if isinstance(timeout, int | float) else self.timeout_s
        payload = json.dumps(body)
        exchanges = current_exchanges.get() or Exchanges()
        async with exchanges.slot() if exchanges.slot else contextlib.nullcontext():
            started = time.monotonic()
            exchanges.count += 1
            try:
                status, content, response_headers = await self._exchange(url, payload, headers, seconds)
            finally:
                exchanges.seconds += time.monotonic() - started
        if status >= 400:
            raise self._make_status_error_from_response(
                httpx2.Response(status, headers=response_headers, content=content,
                                request=httpx2.Request("POST", url))
            )
        try:
            data = json.loads(content)
        except ValueError:
            # pydantic-ai answers a non-JSON body the way it answers the SDK's text fallback.
            return content.decode("utf-8", "replace")
        if not isinstance(data, dict):
            return content.decode("utf-8", "replace")
        return ChatCompletion.construct(**data)

    async def _exchange(
        self, url: str, payload: str, headers: dict[str, str], seconds: float
    ) -> tuple[int, bytes, dict[str, str]]:
        try:
            async with self.session().post(
                url, data=payload, headers=headers, timeout=aiohttp.ClientTimeout(total=seconds)
            ) as response:
                return response.status, await response.read(), dict(response.headers)
        except TimeoutError:
            raise APITimeoutError(request=httpx2.Request("POST", url)) from None
        except aiohttp.ClientError as error:
            raise APIConnectionError(message=f"{type(error).__name__}: {error}",
                                     request=httpx2.Request("POST", url)) from None


class _Completions:
    def __init__(self, client: LeanOpenAI) -> None:
        self._client = client

    async def create(self, **params: Any) -> ChatCompletion | str:
        return await self._client.post_chat(params)


class _Chat:
    def __init__(self, client: LeanOpenAI) -> None:
        self.completions = _Completions(client)
