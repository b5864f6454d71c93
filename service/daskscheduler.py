"""What the Dask scheduler loads at start (``dask scheduler --preload service.daskscheduler``):
it sends each worker its messages promptly. Light on purpose: the scheduler runs no task
and imports nothing of the service beyond this module.

Dask batches what each party sends: a client to its scheduler every 10 ms, a worker to it
every 2 ms, the scheduler to each worker every 5 ms. Those are settings for throughput;
a service that awaits each task waits them out on every round trip (a task's result
released, then the next task sent within 5 ms, waits for the rest of the 5 ms). The
service's client (:mod:`service.executors`) and workers (:mod:`service.daskworker`) send
:data:`SEND_INTERVAL_S` apart; this module has the scheduler do the same to its workers.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

# The client's and workers' streams at 1 ms took a no-op task from 10.4 to 5.5 ms (two
# workers, an earlier machine); the scheduler's to a lone worker, 14 to 9.5 ms (a slower
# machine, one worker; with two, consecutive tasks alternate workers and none waited).
SEND_INTERVAL_S = 0.001


class PromptSends(SchedulerPlugin):
    """Each worker that joins gets the scheduler's messages :data:`SEND_INTERVAL_S` apart."""

    name = "clusterbench-prompt-sends"

    def add_worker(self, scheduler: Any, worker: str) -> None:
        stream = scheduler.stream_comms.get(worker)
        if stream is not None:
            stream.interval = SEND_INTERVAL_S


def dask_setup(scheduler: Any) -> None:
    """Preload hook: :class:`PromptSends` for every worker, those already there too."""
    plugin = PromptSends()
    scheduler.add_plugin(plugin)
    for worker in list(scheduler.stream_comms):
        plugin.add_worker(scheduler, worker)
