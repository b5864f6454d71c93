"""The asyncio client."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx

from service.client.flows import _Flow, _Notify, _Request, _sent_as, _Sleep, _Steps
from service.client.kinds import CHUNK_BYTES, CONNECT_RETRIES, T
from service.client.methods import _Client


class AsyncClient(_Client[httpx.AsyncBaseTransport]):
    """The same API as :class:`Client`, awaited; ``progress`` may be a coroutine function."""

    def _connect(self, transport: httpx.AsyncBaseTransport | None, **options: Any) -> None:
        transport = transport or httpx.AsyncHTTPTransport(retries=CONNECT_RETRIES)
        self._http = httpx.AsyncClient(transport=transport, **options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @staticmethod
    def _running(flow: Callable[..., _Flow[Any]]) -> Callable[..., Any]:
        async def method(self: AsyncClient, *args: Any, **kwargs: Any) -> Any:
            return await self._run(flow(self, *args, **kwargs))

        return method

    async def _send(self, request: _Request) -> httpx.Response:
        try:
            with _sent_as(request, _async_chunks) as args:
                return await self._http.request(request.method, request.url, **args)
        except httpx.TransportError as exc:
            raise self._no_answer(request, exc) from exc

    async def _run(self, flow: _Flow[T]) -> T:
        with _Steps(flow) as steps:
            for action in steps:
                if isinstance(action, _Sleep):
                    await anyio.sleep(action.seconds)
                elif isinstance(action, _Notify):
                    outcome = action.callback(action.job)
                    if inspect.isawaitable(outcome):
                        await outcome
                else:
                    steps.reply = await self._send(action)
        return steps.value


async def _async_chunks(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as source:
        while chunk := await source.read(CHUNK_BYTES):
            yield chunk
