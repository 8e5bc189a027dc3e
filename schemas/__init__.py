"""The records every Touchstream component shares, and how they travel on Kafka.

`hit`      the hit as posted to the edge, and the enriched hit on the `hits` topic
`session`  the session snapshot on the `sessions` topic
`records`  pageview/event/late-hit records on `events`, dead letters on `deadletter`
`wire`     orjson encoding with a schema version, and decoding into the models
`errors`   the small typed error tree
`settings` the settings every component shares (Kafka, topic prefix, PostgreSQL)
`topics`   topic names and their explicit creation
"""

SCHEMA_VERSION = 1
