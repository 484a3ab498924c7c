"""Batch extraction: one json() program per input, concurrent and resumable. `api` holds `extract` /
`aextract` (public as ``guidance_deepinfra.extract``); the engine, the fast path, the adaptive limiter, the
durable records, the inputs, the schema loading, the command and the Dask recipe sit beside it."""
