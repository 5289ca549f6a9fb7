"""The stream: records in, scored windows and dead letters out.

- transport-free core (driven by tests with in-memory fakes): :mod:`~worker.stream.messages`
  (the topics' schemas), :mod:`~worker.stream.windowing`, :mod:`~worker.stream.batching`,
  :mod:`~worker.stream.offsets`, :mod:`~worker.stream.served` (what the core needs of a model),
  :mod:`~worker.stream.incidents` (anomalous windows merged into incidents) and
  :mod:`~worker.stream.incident_record` (the ts.incidents schema), :mod:`~worker.stream.core`;
- Kafka: :mod:`~worker.stream.kafka_loop` (the thin poll loop),
  :mod:`~worker.stream.checkpoint` (publish -> flush -> commit as one step),
  :mod:`~worker.stream.kafka_clients`, :mod:`~worker.stream.topics`,
  :mod:`~worker.stream.readback`, :mod:`~worker.stream.incident_restore` (incident state read
  back from ts.incidents on assignment);
- offline: :mod:`~worker.stream.backtest` (records replayed through the core) and
  :mod:`~worker.stream.gate` (``seq2gmm retrain``'s judgement of a candidate against the
  active version on two replays);
- :mod:`~worker.stream.testing`: in-memory Kafka clients, model and model source, so tests
  drive the Kafka loop without a broker.
"""
