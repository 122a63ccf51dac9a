"""Fault injection: run the product under load, break something, reconcile every 202.

``python -m faults`` (``make faults``) starts real gateway and consumer processes on
loopback, drives sustained signed traffic at them, injects one fault per scenario
(Kafka stopped, consumers SIGKILLed, a sink down, the gateway SIGTERMed, Redis
stopped) and then checks every event id the senders got a 202 for against Kafka and
the sinks. Everything is bounded in time and request count; see docs/reliability.md.
"""
