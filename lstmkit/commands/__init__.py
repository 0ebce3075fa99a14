"""Command-line commands grouped by area; each module exposes ``add_commands(cli)``."""
