"""Every plot renders to a PNG without a display and shows what it claims."""
import numpy as np
import pytest

from lviv_c import plots

mpl = pytest.importorskip("matplotlib")


def _png(fig, tmp_path, name):
    p = tmp_path / f"{name}.png"
    fig.savefig(p)
    data = p.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    return p


def test_all_plots_render(tmp_path):
    rng = np.random.default_rng(0)
    c1, c2 = rng.uniform(-0.1, 0.5, 300), rng.uniform(-0.1, 0.6, 300)
    fig = plots.correlation_histogram({"LN": c1, "CNN": c2})
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(f"{c1.mean():.3f}" in t for t in legend)
    _png(fig, tmp_path, "hist")
    y = rng.poisson(2, (100, 5)).astype(float)
    _png(plots.response_scatter(y, y + rng.normal(0, 1, y.shape), neuron=2), tmp_path, "scatter")
    fig = plots.model_comparison(c1, c2, "LN", "CNN")
    assert "LN" in fig.axes[0].get_xlabel()
    _png(fig, tmp_path, "cmp")
    fig = plots.image_grid(rng.standard_normal((7, 36, 64)), titles=list(range(7)), ncols=4)
    assert len(fig.axes) == 8
    _png(fig, tmp_path, "grid")
    _png(plots.activation_trace(np.cumsum(rng.random((50, 3)), 0), labels=[1, 2, 3]), tmp_path, "trace")
    _png(plots.cross_activation_matrix(rng.random((4, 4)), [1, 2, 3, 4]), tmp_path, "ca")
    _png(plots.training_curves({"correlation": [0.1, 0.2, 0.25]}), tmp_path, "curve")
