"""The HTTP ingest edge (SPEC section 2): POST /v1/hits -> Kafka `hits` (key = guid).

settings    IngestSettings (TOUCHSTREAM_*), extends the shared KafkaSettings
app         the raw ASGI app: the route table, CORS, reading a request and answering its outcome
body        content types, the byte limit while streaming, splitting into items for the intake
items       a body's items and the way back to each one's original bytes
intake      the pure core: items -> records, dead letters, per-item errors, status
fastpath    the common hit validated and enriched without pydantic (checked against HitIn)
client_ip   trusted proxies, X-Forwarded-For, ip modes full|truncate|hash|drop
publisher   batching onto an idempotent acks=all aiokafka producer, with bounded waits
metrics     Prometheus metrics
openapi     the OpenAPI 3.1 document
tracker     GET /v1/tracker.js from a file
errors      the edge's refusals, each with its HTTP status
__main__    `touchstream ingest`: uvicorn with uvloop and httptools
"""
