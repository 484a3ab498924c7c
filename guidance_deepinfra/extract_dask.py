"""Extraction past one process, on Dask's distributed scheduler: ``from guidance_deepinfra.extract_dask import
extract_on_dask``.

The public path named in the README; the code lives with the rest of batch extraction, in `extraction.dask`.
Needs the ``dask`` extra: ``pip install "guidance-deepinfra[dask]"``.
"""

from __future__ import annotations

from .extraction.dask import extract_on_dask, extract_shard, shard_output

__all__ = ["extract_on_dask", "extract_shard", "shard_output"]
