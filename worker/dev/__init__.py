"""Development aids: the embedded Kafka and Redis services, where the CLI finds them, the demo
model and the replay of datasets into ``ts.raw``. Production code never imports this package."""
