"""The simulated engine: a vLLM-like replica without a model, for routing experiments.

Pure core (no Ray): ``params.SimParams``, ``engine.SimEngineCore`` (continuous batching,
chunked prefill, a prefix-cached block pool), ``virtual.VirtualFleet`` (virtual time),
``driver.AsyncSimEngine`` (an asyncio loop in scaled wall time), ``offline`` (exact
hits of a trace and the pooled-cache oracle) and ``calibrate`` (fit the step costs to
a real run). Ray Serve side: ``server.SimLLMServer`` and ``app.build_sim_app``.

Import the submodules directly; this package imports nothing heavy.
"""
