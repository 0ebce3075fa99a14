"""An lstmkit plugin that cannot be imported (test data)."""
raise ImportError("lstmkit_broken_plugin is broken on purpose (it needs a module that is not installed)")
