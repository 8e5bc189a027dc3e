"""The PostgreSQL sink: Kafka `sessions`, `events`, `deadletter` -> the tables analysts read.

A worker is a small pipeline of steps (`touchstream sink`; several share the topics as one
consumer group):

    consumer.py    aiokafka loop: poll -> decode -> write -> commit offsets (only after the write)
    batch.py       pure: records -> rows per table; bad records -> dead letters; sessions coalesced
    writer.py      one transaction per batch: COPY (staging) + INSERT ... ON CONFLICT; retry/isolate
    partitions.py  day partitions of pageviews/events: ahead, on demand, retention
    migrations/    versioned SQL (tables, attribution views, roles) and their runner (`touchstream migrate`)
    metrics.py     Prometheus metrics
    settings.py    SinkSettings (TOUCHSTREAM_* environment variables)
    testing.py     record factories for tests and the benchmark
"""
