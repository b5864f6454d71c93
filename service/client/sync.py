"""The blocking client."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from service.client.flows import _chunks, _Flow, _Notify, _Request, _sent_as, _Sleep, _Steps
from service.client.kinds import CONNECT_RETRIES, T
from service.client.methods import _Client


class Client(_Client[httpx.BaseTransport]):
    """The service's API, over a blocking httpx connection pool.

    Parameters
    ----------
    base_url : str, optional
        Where the service is; default ``$CLUSTERBENCH_URL``, else ``http://127.0.0.1:8000``.
    api_key : str, optional
        Sent as ``Authorization: Bearer <api_key>``, for a service with keys; default
        ``$CLUSTERBENCH_API_KEY``, if set.
    timeout : float or httpx.Timeout
        Per request; the default waits up to 330 s for an answer (a benchmark computes for
        at most 300 s by the service's default) and 10 s to connect.
    max_retries, max_retry_wait : int, float
        An answer 503 or 429 is sent again after its ``Retry-After`` (else 0.5 s, doubling),
        at most ``max_retries`` times and ``max_retry_wait`` seconds in all; then it is raised.
    wait_timeout : float
        How long ``benchmark(wait=True)`` follows a job before it gives up.
    transport : httpx.BaseTransport, optional
        Instead of httpx's own, which retries failed connections twice.
    """

    def _connect(self, transport: httpx.BaseTransport | None, **options: Any) -> None:
        transport = transport or httpx.HTTPTransport(retries=CONNECT_RETRIES)
        self._http = httpx.Client(transport=transport, **options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @staticmethod
    def _running(flow: Callable[..., _Flow[Any]]) -> Callable[..., Any]:
        def method(self: Client, *args: Any, **kwargs: Any) -> Any:
            return self._run(flow(self, *args, **kwargs))

        return method

    def _send(self, request: _Request) -> httpx.Response:
        try:
            with _sent_as(request, _chunks) as args:
                return self._http.request(request.method, request.url, **args)
        except httpx.TransportError as exc:
            raise self._no_answer(request, exc) from exc

    def _run(self, flow: _Flow[T]) -> T:
        with _Steps(flow) as steps:
            for action in steps:
                if isinstance(action, _Sleep):
                    time.sleep(action.seconds)
                elif isinstance(action, _Notify):
                    action.callback(action.job)
                else:
                    steps.reply = self._send(action)
        return steps.value
