"""An lstmkit plugin that misbehaves in every way it can (test data); see pyproject.toml."""
