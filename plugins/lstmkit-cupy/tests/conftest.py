"""Make the plugin importable from a checkout (``pytest plugins/lstmkit-cupy/tests``)
when it is not installed; likewise lstmkit when the plugin sits in lstmkit's repository."""
import sys
from pathlib import Path

PLUGIN_ROOT = Path(__file__).resolve().parents[1]

try:
    import lstmkit  # noqa: F401
except ImportError:
    repo = PLUGIN_ROOT.parents[1]
    if (repo / "lstmkit" / "__init__.py").exists():
        sys.path.insert(0, str(repo))

try:
    import lstmkit_cupy  # noqa: F401
except ImportError:
    sys.path.insert(0, str(PLUGIN_ROOT))
