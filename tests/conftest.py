import numpy as np
import pytest


def pytest_sessionstart(session):
    """With LVIV_EMULATE_CUDA=1 (make test's second run) the emulated device must start: the CUDA
    tests would otherwise all skip and the run would pass without testing anything."""
    import lviv_c
    if lviv_c.cuda.env_flag("LVIV_EMULATE_CUDA"):
        if not lviv_c.cuda.is_available():
            pytest.exit(f"LVIV_EMULATE_CUDA=1 but no device: {lviv_c.cuda.why_unavailable()}", returncode=1)


def numgrad(f, x, eps=1e-6):
    """Central finite differences of a float64 NumPy function f at x (float64 array)."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = f(x)
        x[i] = old - eps
        fm = f(x)
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


@pytest.fixture
def rng():
    return np.random.default_rng(0)
