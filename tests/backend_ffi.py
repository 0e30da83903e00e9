"""The kernel-test harness: runs one kernel-level entry of a backend table (csrc/backend.h) on
caller-made tensors, through ctypes, so that the parity tests call the CPU and the CUDA backend
through the same code. Test-only: the production module lviv_c._C has no kernel runner.

The table's layout is read from csrc/backend.h itself (the field order) and checked against the
size the backend reports (table_size), so the harness cannot drift from the header.

    run_kernel("poisson_loss", [yhat, y, loss, grad], [], [eps, scale])

Tensors (lviv_c tensors, all float32, all on one device; None is NULL), ints and floats follow
the argument lists in KERNELS below (the order of the entry's C arguments).
"""
import ctypes
import os
import re

import lviv_c
from lviv_c import _C
from kern_ffi import AdamAttr, ConvDesc, SgdAttr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
lib = ctypes.CDLL(_C.__file__)
lib.lv_error_msg.restype = ctypes.c_char_p

_CTYPES = {"int": ctypes.c_int, "const char *": ctypes.c_char_p}


def _layout():
    """ctypes fields of struct lv_backend in declaration order (function pointers as void *)."""
    with open(os.path.join(ROOT, "csrc", "backend.h")) as f:
        src = f.read()
    body = src[src.index("typedef struct lv_backend {") + len("typedef struct lv_backend {"):src.index("} lv_backend;")]
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    fields = []
    for decl in body.split(";"):
        decl = " ".join(decl.split())
        if not decl:
            continue
        m = re.search(r"\(\*(\w+)\)", decl)
        if m:
            fields.append((m.group(1), ctypes.c_void_p))
            continue
        m = re.match(r"(.*?)\s*(\w+)$", decl)
        fields.append((m.group(2), _CTYPES[m.group(1).strip()]))
    return fields


class Backend(ctypes.Structure):
    _fields_ = _layout()


P = ctypes.POINTER(ctypes.c_float)
I, I64, F = ctypes.c_int, ctypes.c_int64, ctypes.c_float
_fn = ctypes.CFUNCTYPE

#: name -> (C signature after the return type, [tensors], [ints], [floats]) as the entry takes them
KERNELS = {
    "conv2d_forward": ("x w bias y", "N C_in H W C_out kh kw sh sw ph pw dh dw groups", ""),
    "conv2d_backward_data": ("gy w gx", "N C_in H W C_out kh kw sh sw ph pw dh dw groups", ""),
    "conv2d_backward_weight": ("x gy gw gb", "N C_in H W C_out kh kw sh sw ph pw dh dw groups", ""),
    "bn_forward_train": ("x gamma beta y mean invstd var_unbiased", "N C HW elu", "eps"),
    "bn_forward_eval": ("x gamma beta rmean rvar y", "N C HW elu", "eps"),
    "bn_backward_train": ("x y gy gamma mean invstd gx ggamma gbeta", "N C HW elu", ""),
    "bn_backward_eval": ("x y gy gamma rmean rvar gx ggamma gbeta", "N C HW elu", "eps"),
    "readout_forward": ("x pos feat bias out", "B C H W Nn shared_pos", ""),
    "readout_backward": ("x pos feat gout gx gpos gfeat gbias", "B C H W Nn shared_pos", ""),
    "poisson_loss": ("yhat y loss grad", "", "eps scale"),
    "adam_step": ("p g m v vmax", "step amsgrad maximize", "lr beta1 beta2 eps weight_decay"),
    "sgd_step": ("p g buf", "nesterov maximize first", "lr momentum dampening weight_decay"),
}

_SIG = {
    "conv2d_forward": _fn(I, ctypes.POINTER(ConvDesc), P, P, P, P, P),
    "conv2d_backward_data": _fn(I, ctypes.POINTER(ConvDesc), P, P, P, P),
    "conv2d_backward_weight": _fn(I, ctypes.POINTER(ConvDesc), P, P, P, P, P),
    "bn_forward_train": _fn(I, I, I, I, P, P, P, F, I, P, P, P, P),
    "bn_forward_eval": _fn(I, I, I, I, P, P, P, P, P, F, I, P),
    "bn_backward_train": _fn(I, I, I, I, P, P, P, P, P, P, I, P, P, P),
    "bn_backward_eval": _fn(I, I, I, I, P, P, P, P, P, P, F, I, P, P, P),
    "readout_forward": _fn(I, I, I, I, I, I, I, P, P, P, P, P),
    "readout_backward": _fn(I, I, I, I, I, I, I, P, P, P, P, P, P, P, P),
    "poisson_loss": _fn(I, I64, P, P, F, F, P, P),
    "adam_step": _fn(I, I64, P, P, P, P, P, ctypes.POINTER(AdamAttr)),
    "sgd_step": _fn(I, I64, P, P, P, ctypes.POINTER(SgdAttr)),
    "synchronize": _fn(I),
}


def backend(device):
    """The table of a device ('cpu' or 'cuda'), checked against the header's layout."""
    if device == "cpu":
        t = Backend.in_dll(lib, "lv_cpu_backend")
    else:
        ptr = ctypes.c_void_p.in_dll(lib, "lv_cuda").value
        if not ptr:
            raise RuntimeError("CUDA backend not loaded")
        t = ctypes.cast(ptr, ctypes.POINTER(Backend)).contents
    if t.abi != _C.BACKEND_ABI or t.table_size != ctypes.sizeof(Backend):
        raise RuntimeError(f"backend table {t.abi}/{t.table_size} does not match the header "
                           f"{_C.BACKEND_ABI}/{ctypes.sizeof(Backend)}")
    return t


def _entry(t, name):
    addr = getattr(t, name)
    if not addr:
        raise RuntimeError(f"backend {t.name.decode()} has no entry {name}")
    return _SIG[name](addr)


def _ptr(x):
    return None if x is None else ctypes.cast(ctypes.c_void_p(x._data_ptr), P)


def run_kernel(name, tensors, ints, floats):
    if name not in KERNELS:
        raise ValueError(f"run_kernel: unknown kernel {name}")
    tn, iname, fname = (s.split() for s in KERNELS[name])
    if (len(tensors), len(ints), len(floats)) != (len(tn), len(iname), len(fname)):
        raise ValueError(f"run_kernel {name}: expected tensors ({', '.join(tn)}), ints ({', '.join(iname)}) "
                         f"and floats ({', '.join(fname)})")
    devs = {str(x.device) for x in tensors if x is not None}
    if len(devs) > 1:
        raise ValueError(f"run_kernel {name}: tensors on several devices {sorted(devs)}")
    for k, x in zip(tn, tensors):
        if x is not None and x.dtype != lviv_c.float32:
            raise TypeError(f"run_kernel {name}: {k} must be float32")
    t = backend("cuda" if "cuda" in "".join(devs) else "cpu")
    p = [_ptr(x) for x in tensors]
    n = lambda x: 0 if x is None else x.numel()  # noqa: E731
    if name.startswith("conv2d"):
        d = ConvDesc(*ints, 0, 0)
        if lib.lv_conv2d_prepare(ctypes.byref(d)) != 0:
            raise ValueError(lib.lv_error_msg().decode())
        rc = _entry(t, name)(ctypes.byref(d), *p, None)
    elif name == "poisson_loss":
        rc = _entry(t, name)(n(tensors[0]), p[0], p[1], floats[0], floats[1], p[2], p[3])
    elif name == "adam_step":
        at = AdamAttr(*floats, *ints)
        rc = _entry(t, name)(n(tensors[0]), *p, ctypes.byref(at))
    elif name == "sgd_step":
        at = SgdAttr(*floats, *ints)
        rc = _entry(t, name)(n(tensors[0]), *p, ctypes.byref(at))
    elif name.startswith("bn_"):
        N, C, HW, elu = ints
        eps = floats[0] if floats else None
        if name == "bn_forward_train":
            rc = _entry(t, name)(N, C, HW, *p[:3], eps, elu, *p[3:])
        elif name == "bn_forward_eval":
            rc = _entry(t, name)(N, C, HW, *p[:5], eps, elu, p[5])
        elif name == "bn_backward_train":
            rc = _entry(t, name)(N, C, HW, *p[:6], elu, *p[6:])
        else:
            rc = _entry(t, name)(N, C, HW, *p[:6], eps, elu, *p[6:])
    else:  # readout
        rc = _entry(t, name)(*ints, *p)
    if rc == 0:
        rc = _entry(t, "synchronize")()
    if rc != 0:
        raise ValueError(lib.lv_error_msg().decode())
