"""Pins the public surface so it grows on purpose, never by accident."""

import mnemos_kv


def test_all_names_exist_and_are_exported() -> None:
    for name in mnemos_kv.__all__:
        assert hasattr(mnemos_kv, name), name
    public = {n for n in dir(mnemos_kv) if not n.startswith("_")}
    modules = {"errors", "embedders", "store", "cli", "filters", "mcp", "langchain", "langgraph",
               "rerank"}
    assert public - modules - set(mnemos_kv.__all__) == set()


def test_core_names_present() -> None:
    for name in ("Mnemos", "Namespace", "Memory", "Edge", "MnemosError", "HashingEmbedder"):
        assert name in mnemos_kv.__all__
    assert mnemos_kv.Mnemos.__module__ == "mnemos_kv"


def test_py_typed_ships() -> None:
    import os
    assert os.path.exists(os.path.join(os.path.dirname(mnemos_kv.__file__), "py.typed"))


def test_open_does_not_import_networkx() -> None:
    import subprocess
    import sys
    code = ("import sys, tempfile, os; from mnemos_kv import Mnemos; "
            "d = tempfile.mkdtemp(); db = Mnemos.open(os.path.join(d, 's.mem')); db.remember('x'); "
            "db.ask('x'); print('networkx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
