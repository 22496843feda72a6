"""Cache- and load-aware request routing.

The policy core (``core``, ``policy``, ``index``, ``load``, ``kv_events``, ...) is plain
Python with no Ray import; ``ray_router`` adapts it to Ray Serve's RequestRouter.
"""
