"""ctypes access to the raw CPU kernels exported by lviv_c._C (see csrc/cpu/kernels.h)."""
import ctypes

import numpy as np

import lviv_c  # noqa: F401  (preloads OpenBLAS)

lib = ctypes.CDLL(lviv_c._C.__file__)
lib.lv_error_msg.restype = ctypes.c_char_p


class ConvDesc(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int) for n in
                ("N", "C_in", "H", "W", "C_out", "kh", "kw", "sh", "sw", "ph", "pw", "dh", "dw",
                 "groups", "Ho", "Wo")]


class AdamAttr(ctypes.Structure):  # lv_adam_attr (csrc/opdef.h)
    _fields_ = [("lr", ctypes.c_float), ("beta1", ctypes.c_float), ("beta2", ctypes.c_float),
                ("eps", ctypes.c_float), ("weight_decay", ctypes.c_float), ("step", ctypes.c_int64),
                ("amsgrad", ctypes.c_int), ("maximize", ctypes.c_int)]


class SgdAttr(ctypes.Structure):  # lv_sgd_attr (csrc/opdef.h)
    _fields_ = [("lr", ctypes.c_float), ("momentum", ctypes.c_float), ("dampening", ctypes.c_float),
                ("weight_decay", ctypes.c_float), ("nesterov", ctypes.c_int), ("maximize", ctypes.c_int),
                ("first", ctypes.c_int)]


def P(a):
    """float pointer for a float32 C-contiguous array (None -> NULL)."""
    if a is None:
        return None
    assert a.dtype == np.float32 and a.flags.c_contiguous
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


F = ctypes.c_float
I64 = ctypes.c_int64


def call(name, *args):
    rc = getattr(lib, name)(*args)
    if rc != 0:
        raise ValueError(lib.lv_error_msg().decode())
    return rc


for _n in ("lv_conv2d_workspace_floats",):
    getattr(lib, _n).restype = ctypes.c_size_t


def f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def conv_desc(N, C_in, H, W, C_out, kh, kw, stride=(1, 1), pad=(0, 0), dil=(1, 1), groups=1):
    d = ConvDesc(N, C_in, H, W, C_out, kh, kw, stride[0], stride[1], pad[0], pad[1], dil[0], dil[1],
                 groups, 0, 0)
    call("lv_conv2d_prepare", ctypes.byref(d))
    return d


def conv2d(d, x, w, b=None, ws=None):
    y = np.empty((d.N, d.C_out, d.Ho, d.Wo), np.float32)
    call("lv_conv2d_forward", ctypes.byref(d), P(x), P(w), P(b), P(y), P(ws))
    return y


def conv2d_bwd_data(d, gy, w, ws=None, gx=None):
    if gx is None:
        gx = np.zeros((d.N, d.C_in, d.H, d.W), np.float32)
    call("lv_conv2d_backward_data", ctypes.byref(d), P(gy), P(w), P(gx), P(ws))
    return gx


def conv2d_bwd_weight(d, x, gy, bias=True, ws=None):
    gw = np.zeros((d.C_out, d.C_in // d.groups, d.kh, d.kw), np.float32)
    gb = np.zeros(d.C_out, np.float32) if bias else None
    call("lv_conv2d_backward_weight", ctypes.byref(d), P(x), P(gy), P(gw), P(gb), P(ws))
    return gw, gb
