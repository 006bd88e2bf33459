"""Built-in plugins: the rule functions, actions and lookups every installation has.

Each module here is an ordinary plugin (``@hookimpl`` functions, or a
``make_plugin()`` factory for those with settings), listed in
:data:`router.plugins.DEFAULT_PLUGINS` and registered exactly like an
installed one. The core declares no other plugin's names: a lookup such as
``onec.responsible`` exists when its plugin is installed and registers it.
"""
