"""Model versions in Redis: publish, promote, roll back, and hot reload in every worker.

- :mod:`~worker.registry.store`: :class:`~worker.registry.store.ModelRegistry`, the registry
  itself (publish, promote, roll back, delete, the retraining gate's decision log);
- :mod:`~worker.registry.reader`: its read side (listings, pointers, history, verified
  versions) and the Redis key layout;
- :mod:`~worker.registry.records`: what is stored (versions, history entries, summaries) and
  the validation of names, aliases, versions, sha256 and safetensors headers;
- :mod:`~worker.registry.lua`: the Lua scripts that make commits and alias moves atomic;
- :mod:`~worker.registry.connection`: Redis clients from URLs, printable URLs, service errors;
- :mod:`~worker.registry.errors`: the registry's exceptions;
- :mod:`~worker.registry.watcher`: follows the active version in a background thread;
- :mod:`~worker.registry.loader`: a verified version -> the model the stream serves;
- :mod:`~worker.registry.cache`: the last verified active version on local disk.

The registry takes a Redis URL or client; where Redis runs (configured, or the embedded
development valkey) is resolved by the CLI, so nothing here imports :mod:`worker.dev`.
"""
