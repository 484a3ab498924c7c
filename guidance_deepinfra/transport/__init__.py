"""The only code that does HTTP: the streaming SDK client with its retries and deadlines (`client`,
`deadline`), the extraction fast path's aiohttp client (`aio`), the request body DeepInfra accepts (`body`)
and the reading of its error answers (`wire`). Everything above reaches DeepInfra through these."""
