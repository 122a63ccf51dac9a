"""The naive baseline: the webhook receiver a tutorial would write.

A FastAPI route that reads the body, checks the HMAC, parses the JSON for the key and
awaits ``send_and_wait`` for every request: one Kafka round trip per request, with
no batching beyond what concurrent requests happen to share. Same Kafka settings as
the gateway (idempotent, ``acks=all``); only the program differs.

Run: ``python -m uvicorn --factory bench.apps.naive:create_app --no-access-log`` with
``BENCH_KAFKA_BOOTSTRAP``, ``BENCH_TOPIC`` and ``BENCH_SECRET`` set.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse


def create_app() -> FastAPI:
    bootstrap = os.environ.get("BENCH_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    topic = os.environ["BENCH_TOPIC"]
    secret = os.environ["BENCH_SECRET"].encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await producer.start()
        try:
            yield
        finally:
            await producer.stop()

    app = FastAPI(lifespan=lifespan)

    @app.post("/webhooks/crystallize", status_code=202)
    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        given = request.headers.get("x-crystallize-signature", "")
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, given):
            raise HTTPException(status_code=401, detail="bad signature")
        order = json.loads(body)
        event_id = hashlib.sha256(body).hexdigest()
        await producer.send_and_wait(topic, body, key=order["order"]["get"]["id"].encode())
        return JSONResponse({"id": event_id}, status_code=202)

    return app
