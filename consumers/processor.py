"""What happens to one record: contract check, routing, fan-out to its sinks.

The work the engine's scheduler does for each record of ``run``: a record that breaks
the contract is dead-lettered, an unrouted one dropped or dead-lettered (``unrouted``),
any other delivered to every sink its routes name, concurrently.
"""

from __future__ import annotations

import asyncio
import logging

from consumers.config import ConsumersSection
from consumers.delivery import Deliverer
from consumers.dlq import REASON_CONTRACT, REASON_UNROUTED
from consumers.metrics import ConsumerMetrics
from consumers.record import WorkItem
from consumers.routing import Router

log = logging.getLogger(__name__)


class Processor:
    """What happens to one record: contract check, routing, fan-out to its sinks."""

    def __init__(
        self,
        config: ConsumersSection,
        router: Router,
        deliverer: Deliverer,
        metrics: ConsumerMetrics,
    ) -> None:
        self._config = config
        self._router = router
        self._deliverer = deliverer
        self._metrics = metrics

    async def __call__(self, item: WorkItem) -> None:
        if item.event is None:
            log.warning(
                "record %s/%d@%d breaks the contract: %s",
                item.record.topic,
                item.record.partition,
                item.record.offset,
                item.error,
            )
            await self._deliverer.dead_letter(
                item.record, reason=REASON_CONTRACT, sink="", attempts=0, error=item.error
            )
            return
        sinks = self._router.sinks_for(item.event)
        if not sinks:
            action = self._config.unrouted
            self._metrics.unrouted.labels(action).inc()
            if action == "dead-letter":
                await self._deliverer.dead_letter(
                    item.record,
                    reason=REASON_UNROUTED,
                    sink="",
                    attempts=0,
                    error="no route matched",
                )
            return
        event = item.event
        if len(sinks) == 1:
            await self._deliverer.deliver(event, item.record, sinks[0])
            return
        async with asyncio.TaskGroup() as group:
            for sink in sinks:
                group.create_task(self._deliverer.deliver(event, item.record, sink))
