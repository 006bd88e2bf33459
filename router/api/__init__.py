"""The HTTP API for 1C and other clients (``[api]`` in router.toml).

An ASGI application (:func:`router.api.app.build_app`) served by uvicorn in
the engine's own event loop (:mod:`router.api.server`), talking to the engine
only through :class:`router.hookspecs.EngineAPI`. This package's root imports
nothing: :mod:`router.config` reads ``[api]`` through
:mod:`router.api.settings`, which must not pull in Starlette or the engine.
"""
