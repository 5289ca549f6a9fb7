"""Model versions in Redis: publish, promote, roll back, and hot reload in every worker.

- :mod:`~worker.registry.store`: the registry itself (records, validation, Lua scripts);
- :mod:`~worker.registry.watcher`: follows the active version between batches;
- :mod:`~worker.registry.loader`: a verified version -> the model the stream serves.
"""
