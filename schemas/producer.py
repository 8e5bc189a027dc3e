"""What every Kafka producer of the project needs to know about aiokafka's idempotent producer."""

from __future__ import annotations

from aiokafka import errors as aiokafka_errors

# Errors after which an idempotent producer never recovers (seen after a broker restart): every
# later batch fails the same way, so the owner must replace the producer (a new producer id).
PRODUCER_STATE_LOST: tuple[type[BaseException], ...] = (
    aiokafka_errors.OutOfOrderSequenceNumber,
    aiokafka_errors.UnknownProducerId,
    aiokafka_errors.InvalidProducerEpoch,
)
