"""The request cache: DeepInfra's answers kept in one SQLite file, so a re-run does not pay again.

`store.ResponseCache` is the file (keys, LRU bound, corruption and write failures); `store.CacheRun` is one
run's view of it, which maps the k-th identical request of the run to the k-th answer stored for it. The
transports record and replay through it (`transport.cached`); nothing here touches the network.
"""
