"""Digests for refactors: the exact float bytes of the course LN, CNN and Lurz 2020 state dicts after
a few training steps (the captured C loop, and the eager loop with optim.Adam incl. amsgrad) on a
small synthetic scan with fixed seeds, their predictions, and every elementwise op's forward and
backward. A change that moves one bit of these moves a digest.

The digests depend on the machine (the BLAS kernels OpenBLAS picks for the CPU, the thread count),
so they are stored per machine fingerprint; on a machine without a recorded entry the comparison
is skipped (say so) and only the run-to-run identity is checked. To record the current machine:
``LVIV_RECORD_DIGESTS=1 python -m pytest tests/test_digests.py`` (then paste the printed entry).
"""
import hashlib
import importlib
import os
import platform

import numpy as np
import pytest

import lviv_c as L
from lviv_c import nn
T = importlib.import_module("lviv_c.tensor")  # the op codes (lviv_c.tensor is also a function)
from lviv_c.course import CNN, Linear
from lviv_c.dataset import load_dataset
from lviv_c.models import build_lurz2020_model
from lviv_c.synthetic import make_scan
from lviv_c.trainers import Engine

LURZ = dict(init_mu_range=0.55, init_sigma=0.4, input_kern=5, hidden_kern=3, gamma_input=1.0, layers=3,
            hidden_channels=8, gamma_readout=2.439,
            grid_mean_predictor={"type": "cortex", "input_dimensions": 2, "hidden_layers": 0,
                                 "hidden_features": 0, "final_tanh": False})

#: fingerprint -> {name: sha256 of the float bytes}; recorded before the backend refactor. The
#: eager LN and Lurz runs use amsgrad: optim.Adam's amsgrad path had its own arithmetic (torch's
#: lerp form) until the one Adam (lv_f_adam), which rounds differently (~1 ulp per step).
#: Every model has a BatchNorm (the LN's BatchNorm2d(1) on the input): its statistics were re-recorded
#: when BatchNorm's sums became 32 interleaved float lanes per (n, c) plane with the planes' mean and
#: squared deviations merged in double (lv_f_var_merge) instead of serial float sums per plane and a
#: second pass for the variance, and its affine step an FMA (csrc/cpu/norm.c).
RECORDED = {
    'x86_64|AMD EPYC|threads=2': {
        'cnn.captured.pred': '75c7cfbae6bbe7c0a6410947',  # BatchNorm: vectorised sums, Chan merge
        'cnn.captured.state': 'ee36184b4cce2d024ed1f72b',  # BatchNorm: vectorised sums, Chan merge
        'cnn.eager.pred': '1898bc5be15eb7248d8b3494',  # BatchNorm: vectorised sums, Chan merge
        'cnn.eager.state': '987faf4034f27835ee730852',  # BatchNorm: vectorised sums, Chan merge
        'elementwise': '7edfdcfd237fb94587b37e89',
        'ln.captured.pred': 'f23305299d0226ccc417abd6',  # BatchNorm: vectorised sums, Chan merge
        'ln.captured.state': '29ca81cf097ea4170f26d91a',  # BatchNorm: vectorised sums, Chan merge
        'ln.eager.pred': 'e07ff615d09c1189968f0fd6',  # BatchNorm: vectorised sums, Chan merge
        'ln.eager.state': 'fb775ecabf446d348cf89eee',  # BatchNorm: vectorised sums, Chan merge
        'lurz.captured.pred': '00dc0fcf672d649fc901bfbd',  # BatchNorm: vectorised sums, Chan merge
        'lurz.captured.state': '3b2441089e9266f6a4c5c920',  # BatchNorm: vectorised sums, Chan merge
        'lurz.eager.pred': 'ac6fe9f07060ec89b29f9be2',  # BatchNorm: vectorised sums, Chan merge
        'lurz.eager.state': '8f1bb67b9f549945e93479c7',  # BatchNorm: vectorised sums, Chan merge
    },
}


def _fingerprint():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.machine()}|{cpu or platform.processor()}|threads={L._C.num_threads()}"


def _h(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:24]


def _state(model):
    return _h(*[v.numpy() for _, v in sorted(model.state_dict().items())])


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return make_scan(tmp_path_factory.mktemp("digest"), n_trials=260, n_neurons=24, image_shape=(18, 32),
                     n_test_images=4, n_repeats=3, n_validation=40, seed=11, progress=False)


def _models(dl):
    L.manual_seed(0)
    yield "ln", Linear(18, 32, 24, gamma=0.1)
    L.manual_seed(1)
    yield "cnn", CNN(18, 32, 24)
    # the builder reads a first batch (readout bias): a fresh loader, so the batch is the same
    yield "lurz", build_lurz2020_model(dataloaders=load_dataset(dl["path"], batch_size=20, seed=2),
                                       seed=1234, **LURZ)


def _ORDER(dl):
    """a fixed order of 80 training trials (4 batches)"""
    return np.random.default_rng(5).permutation(dl["train"].indices)[:80]


def _captured(dl):
    """State dicts after 4 batches of the captured C loop, and validation predictions."""
    out = {}
    for name, model in _models(dl):
        L.manual_seed(100)   # readout sampling / dropout draws
        eng = Engine(model, dl["train"])
        eng.train_epoch(_ORDER(dl))
        out[f"{name}.captured.state"] = _state(model)
        out[f"{name}.captured.pred"] = _h(eng.predict(dl["validation"]))
    return out


def _eager(dl):
    """State dicts after 3 eager steps (forward, Poisson loss + regularizer, backward, optim.Adam
    with amsgrad and weight decay), and eval-mode predictions of the validation images."""
    out = {}
    xb, yb = dl["train"].images_block, dl["train"].responses_block
    order = _ORDER(dl)
    batches = [(L.tensor(xb[i]), L.tensor(yb[i])) for i in np.split(order[:60], 3)]
    vx = L.tensor(dl["validation"].images_block[dl["validation"].indices[:20]])
    for name, model in _models(dl):
        L.manual_seed(100)
        opt = L.optim.Adam(model.parameters(), lr=0.005, weight_decay=1e-4, amsgrad=(name != "cnn"))
        model.train()
        for x, y in batches:
            opt.zero_grad()
            loss = nn.functional.poisson_loss(model(x), y) + model.regularizer()
            loss.backward()
            opt.step()
        model.eval()
        with L.no_grad():
            p = model(vx).numpy()
        out[f"{name}.eager.state"] = _state(model)
        out[f"{name}.eager.pred"] = _h(p)
    return out


def _elementwise():
    """Every unary and binary op code of the C core, forward and backward, on fixed inputs away
    from kinks (broadcasting included), and the Poisson loss with its gradient."""
    rng = np.random.default_rng(3)
    a = rng.uniform(0.2, 2.0, size=(3, 5, 7)).astype(np.float32)
    s = rng.choice([-1.0, 1.0], size=a.shape).astype(np.float32)
    b = rng.uniform(0.3, 1.7, size=(5, 1)).astype(np.float32)
    g = L.tensor(np.linspace(-1, 1, a.size, dtype=np.float32).reshape(a.shape))
    res = []
    unary = [("NEG", 0, 0), ("EXP", 0, 0), ("LOG", 0, 0), ("SQRT", 0, 0), ("ABS", 0, 0), ("SIGN", 0, 0),
             ("ELU", 0.7, 0), ("RELU", 0, 0), ("TANH", 0, 0), ("SIGMOID", 0, 0), ("CLAMP", -0.5, 0.9),
             ("AFFINE", 1.7, 0.3), ("POWS", 2.5, 0), ("POWS", 2.0, 0), ("RDIV", 1.3, 0), ("SQUARE", 0, 0),
             ("LOG1P", 0, 0), ("SOFTPLUS", 0, 0), ("SIN", 0, 0), ("COS", 0, 0)]
    for name, p0, p1 in unary:
        positive = name in ("LOG", "SQRT", "LOG1P", "POWS")
        x = L.tensor(a if positive else a * s, requires_grad=True)
        y = L._C.unary(getattr(T, name), x, float(p0), float(p1))
        y.backward(g)
        res += [y.detach().numpy(), x.grad.numpy()]
    for name in ("ADD", "SUB", "MUL", "DIV", "POW", "MAXIMUM", "MINIMUM"):
        x = L.tensor(a, requires_grad=True)
        y = L.tensor(b, requires_grad=True)
        z = L._C.binary(getattr(T, name), x, y)
        z.backward(g)
        res += [z.detach().numpy(), x.grad.numpy(), y.grad.numpy()]
    for name in ("EQ", "NE", "LT", "LE", "GT", "GE"):
        res.append(L._C.binary(getattr(T, name), L.tensor(np.round(a, 1)), L.tensor(np.round(b, 1))).numpy())
    yhat, y = L.tensor(a, requires_grad=True), L.tensor(np.floor(a * 2))
    loss = nn.functional.poisson_loss(yhat, y)
    loss.backward()
    res += [loss.detach().numpy(), yhat.grad.numpy()]
    return {"elementwise": _h(*res)}


@pytest.fixture(scope="module")
def loaders(scan):
    dl = load_dataset(scan, batch_size=20, seed=2)
    dl["path"] = scan
    return dl


@pytest.fixture(scope="module")
def digests(loaders):
    d = {}
    d.update(_elementwise())
    d.update(_captured(loaders))
    d.update(_eager(loaders))
    return d


def test_digests_repeat_run_to_run(loaders, digests):
    again = {}
    again.update(_elementwise())
    again.update(_captured(loaders))
    assert {k: digests[k] for k in again} == again


def test_digests_match_the_recorded_ones(digests):
    fp = _fingerprint()
    if os.environ.get("LVIV_RECORD_DIGESTS"):
        print(f"\n    {fp!r}: {{")
        for k in sorted(digests):
            print(f"        {k!r}: {digests[k]!r},")
        print("    },")
    if fp not in RECORDED:
        pytest.skip(f"no digests recorded for this machine ({fp}); see the module docstring")
    assert digests == RECORDED[fp]
