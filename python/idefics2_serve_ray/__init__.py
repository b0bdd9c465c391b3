"""idefics2 on Ray Serve: replicas of `idefics2 serve` behind one OpenAI-compatible endpoint.

Optional: needs `ray[serve]` (python/requirements-ray.txt); the worker never imports it.
`python -m idefics2_serve_ray --replicas 2` runs it; `serve run idefics2_serve_ray.app:app_builder` too.
"""

from .config import Idefics2RayConfig

__all__ = ["Idefics2RayConfig"]
