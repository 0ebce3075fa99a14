"""``import lstmkit`` stays cheap: the modules (and NumPy) load on first use."""
import subprocess
import sys


def test_import_lstmkit_does_not_import_numpy():
    code = "import sys, lstmkit; assert 'numpy' not in sys.modules; lstmkit.LSTM; assert 'numpy' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lazy_names_resolve():
    import lstmkit

    for name in lstmkit.__all__:
        assert getattr(lstmkit, name) is not None
    assert "LSTM" in dir(lstmkit)
