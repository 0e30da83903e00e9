"""The course notebook on lviv_c (notebooks/course_lviv_c.ipynb): generated from
notebooks/make_notebook.py, imports only lviv_c, and runs end to end (nbclient, the test's own
Python as the kernel) on a tiny synthetic scan with one epoch per model, producing its figures."""
import json
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB = os.path.join(ROOT, "notebooks", "course_lviv_c.ipynb")


def _load_generator():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "make_notebook", os.path.join(ROOT, "notebooks", "make_notebook.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _code(nb):
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_notebook_is_generated_from_the_script():
    with open(NB) as f:
        nb = json.load(f)
    gen = _load_generator().notebook()
    assert [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]] == \
        [(c["cell_type"], "".join(c["source"])) for c in gen["cells"]], \
        "run python notebooks/make_notebook.py"


def test_notebook_imports_lviv_c_only_and_no_shell():
    with open(NB) as f:
        src = "\n".join(_code(json.load(f)))
    assert not re.search(r"^\s*(import torch|from torch|from lviv\b|import lviv\b)", src, re.M)
    assert not re.search(r"^\s*!|^\s*ls ", src, re.M)
    for needed in ("import lviv_c as torch", "from lviv_c import nn",
                   "from lviv_c.nn import functional as F", "from lviv_c.dataset import load_dataset",
                   "from lviv_c.trainers import train_model",
                   "from lviv_c.models import build_lurz2020_model",
                   "from lviv_c.utility.measures import"):
        assert needed in src, needed


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    from lviv_c import synthetic
    work = tmp_path_factory.mktemp("nb")
    scan = synthetic.make_scan(str(work / "data"), **synthetic.SMALL, seed=2, progress=False)
    env = {"LVIV_DATA": scan, "LVIV_QUICK": "1", "LVIV_MAX_ITER": "1", "LVIV_MEI_ITER": "3",
           "LVIV_CACHE": str(work / "cache"), "MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nb = nbformat.read(NB, as_version=4)
        # the kernel is this interpreter: jupyter_client runs a kernelspec whose command is
        # "python" with sys.executable (ipykernel's own spec when none is installed)
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": str(work)}})
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def test_every_cell_ran_without_error(executed):
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code)
    for c in code:
        for o in c.get("outputs", []):
            assert o.get("output_type") != "error", (c.source[:200], o.get("ename"), o.get("evalue"))


def test_figures_were_produced(executed):
    pngs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") in ("display_data", "execute_result")
            and "image/png" in o.get("data", {})]
    # image, histogram, 2 ELU plots, LN scatter/histogram/oracle, comparison x2, SOTA scatter,
    # RFs x2, MEIs x2 + trace, cross-activation, ground truth
    assert len(pngs) >= 17, len(pngs)
    text = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    for label in ("LN", "simple CNN", "CNN", "Lurz 2020", "Lurz 2020 linear"):
        assert label in text
    assert "correlation with the true filter" in text
