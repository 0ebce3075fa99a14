"""Ends the process at import, as a careless plugin might."""
import sys

sys.exit("lstmkit_rogue_plugin.exits ends the process on purpose")
