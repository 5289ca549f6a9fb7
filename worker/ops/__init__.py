"""Running the worker: settings, logging, Prometheus telemetry, the health/metrics HTTP
server and terminal progress."""
