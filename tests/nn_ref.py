"""float64 NumPy references for the nn ops and a finite-difference gradient checker."""
import numpy as np

import lviv_c


def conv2d(x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    Og = O // groups
    y = np.zeros((N, O, Ho, Wo), dtype=np.result_type(x, w))
    for g in range(groups):
        xg = xp[:, g * Cg:(g + 1) * Cg]
        wg = w[g * Og:(g + 1) * Og]
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i * dh:i * dh + sh * (Ho - 1) + 1:sh, j * dw:j * dw + sw * (Wo - 1) + 1:sw]
                y[:, g * Og:(g + 1) * Og] += np.einsum("nchw,oc->nohw", patch, wg[:, :, i, j])
    if b is not None:
        y += b[None, :, None, None]
    return y


def batch_norm_train(x, g=None, b=None, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shp = (1, -1) + (1,) * (x.ndim - 2)
    m = x.mean(axis=axes, keepdims=True)
    v = x.var(axis=axes, keepdims=True)
    y = (x - m) / np.sqrt(v + eps)
    if g is not None:
        y = y * g.reshape(shp)
    if b is not None:
        y = y + b.reshape(shp)
    return y


def batch_norm_eval(x, rm, rv, g=None, b=None, eps=1e-5):
    shp = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - rm.reshape(shp)) / np.sqrt(rv.reshape(shp) + eps)
    if g is not None:
        y = y * g.reshape(shp)
    if b is not None:
        y = y + b.reshape(shp)
    return y


def elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def grid_sample(x, grid, align_corners):
    N, C, H, W = x.shape
    _, Ho, Wo, _ = grid.shape
    gx, gy = grid[..., 0], grid[..., 1]
    if align_corners:
        ix, iy = (gx + 1) / 2 * (W - 1), (gy + 1) / 2 * (H - 1)
    else:
        ix, iy = ((gx + 1) * W - 1) / 2, ((gy + 1) * H - 1) / 2
    x0, y0 = np.floor(ix).astype(int), np.floor(iy).astype(int)
    out = np.zeros((N, C, Ho, Wo), dtype=np.result_type(x, grid))
    for dy in (0, 1):
        for dx in (0, 1):
            xx, yy = x0 + dx, y0 + dy
            wx = (ix - x0) if dx else (1 - (ix - x0))
            wy = (iy - y0) if dy else (1 - (iy - y0))
            valid = (xx >= 0) & (xx < W) & (yy >= 0) & (yy < H)
            xc, yc = np.clip(xx, 0, W - 1), np.clip(yy, 0, H - 1)
            for n in range(N):
                v = x[n][:, yc[n], xc[n]]  # (C, Ho, Wo)
                out[n] += v * (wx[n] * wy[n] * valid[n])[None]
    return out


def avg_pool2d(x, k, s, p):
    kh, kw = k
    sh, sw = s
    ph, pw = p
    xp = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(ph, ph), (pw, pw)])
    H, W = xp.shape[-2:]
    Ho, Wo = (H - kh) // sh + 1, (W - kw) // sw + 1
    out = np.zeros(x.shape[:-2] + (Ho, Wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            out += xp[..., i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]
    return out / (kh * kw)


def poisson_loss(yhat, y, eps=1e-12):
    return np.sum(yhat - y * np.log(yhat + eps))


def t(a, grad=False):
    x = lviv_c.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if grad:
        x.requires_grad = True
    return x


def check_grad(lv_fn, np_fn, inputs, check, h=1e-6, rtol=2e-3, seed=0, fwd_rtol=1e-4):
    """Compare lviv_c's backward (float32) with float64 central differences of np_fn.

    inputs: list of float64 arrays (None allowed); check: indices whose gradient is compared.
    The scalar is sum(out * R) with a fixed random R. Also compares the forward. Returns the
    analytic gradients (for extra checks)."""
    rng = np.random.default_rng(seed)
    tens = [None if a is None else t(a, grad=(i in check)) for i, a in enumerate(inputs)]
    out = lv_fn(*tens)
    ref = np_fn(*inputs)
    out_np = np.asarray(out.detach())
    assert out_np.shape == np.shape(ref), (out_np.shape, np.shape(ref))
    scale = max(1.0, float(np.max(np.abs(ref))) if np.size(ref) else 1.0)
    np.testing.assert_allclose(out_np, ref, rtol=fwd_rtol, atol=fwd_rtol * scale)
    R = rng.standard_normal(out_np.shape)
    if out_np.ndim == 0:
        out.backward()
        R = np.float64(1.0)
    else:
        out.backward(t(R))
    grads = {}
    for i in check:
        a = inputs[i]
        num = np.zeros_like(a)
        flat = a.reshape(-1)
        for k in range(flat.size):
            old = flat[k]
            flat[k] = old + h
            fp = np.sum(np_fn(*inputs) * R)
            flat[k] = old - h
            fm = np.sum(np_fn(*inputs) * R)
            flat[k] = old
            num.reshape(-1)[k] = (fp - fm) / (2 * h)
        g = tens[i].grad
        assert g is not None, f"input {i}: no gradient"
        ana = np.asarray(g)
        gscale = max(1e-3, float(np.max(np.abs(num))))
        np.testing.assert_allclose(ana, num, rtol=rtol, atol=rtol * gscale,
                                   err_msg=f"gradient of input {i}")
        grads[i] = ana
    return out, grads
