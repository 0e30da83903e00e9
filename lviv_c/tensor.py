"""The torch-like Tensor. Every op is a call into the C core (lviv_c._C), which records it for
autograd; this file only parses arguments (shapes, indices, dims) and forwards."""
import builtins
import contextlib
import numbers

import numpy as np

from . import _C

# op codes: defined once in csrc/opdef.h, exported by the extension
from ._C import (ADD, SUB, MUL, DIV, POW, MAXIMUM, MINIMUM, EQ, NE, LT, LE, GT, GE,  # noqa: E402,F401
                 NEG, EXP, LOG, SQRT, ABS, SIGN, ELU, RELU, TANH, SIGMOID, CLAMP, AFFINE, POWS, RDIV,
                 SQUARE, LOG1P, SOFTPLUS, SIN, COS,
                 RSUM, RMEAN, RVAR, RSTD, RMAX, RMIN, RARGMAX, RARGMIN)


class dtype:
    """A tensor element type (float32 for values, int64 for indices)."""

    def __init__(self, name, code, np_dtype):
        self.name, self.code, self.np = name, code, np.dtype(np_dtype)

    def __repr__(self):
        return f"lviv_c.{self.name}"

    @property
    def is_floating_point(self):
        return self.code == 0


float32 = dtype("float32", 0, np.float32)
int64 = dtype("int64", 1, np.int64)
# bool (torch.bool): what comparisons return; stored as float32 0/1 in the C core and marked as
# a mask on the Python object, so indexing can tell a mask (shape-checked) from positions
bool_ = dtype("bool", 0, np.bool_)
float = float32  # noqa: A001  torch.float
long = int64
_DTYPES = {0: float32, 1: int64}


def _as_dtype(d):
    if d is None or isinstance(d, dtype):
        return d
    if d is builtins.bool:
        return bool_
    nd = np.dtype(d)
    if nd.kind == "b":
        return bool_
    if nd.kind == "f":
        return float32
    if nd.kind in "iu":
        return int64
    raise TypeError(f"unsupported dtype {d!r}: lviv_c tensors are float32, int64 or bool")


def _is_bool(t):
    return t.__dict__.get("_is_bool", False)


def _mark_bool(t):
    t._is_bool = True
    return t


class device:
    def __init__(self, spec="cpu"):
        if isinstance(spec, device):
            self.type, self.index = spec.type, spec.index
            return
        spec = str(spec)
        t, _, i = spec.partition(":")
        if t not in ("cpu", "cuda"):
            raise ValueError(f"unknown device {spec!r}: expected 'cpu' or 'cuda'")
        self.type = t
        self.index = int(i) if i else (0 if t == "cuda" else None)

    def __repr__(self):
        return f"device(type='{self.type}')" if self.index is None else f"device(type='{self.type}', index={self.index})"

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other):
        try:
            o = device(other)
        except (ValueError, TypeError):
            return NotImplemented
        return self.type == o.type

    def __hash__(self):
        return hash(self.type)


def _check_device(dev):
    """Resolve a device argument; 'cuda' without a GPU raises a clear RuntimeError."""
    if dev is None:
        return None
    d = device(dev)
    if d.type == "cuda":
        from . import cuda
        cuda._require()  # RuntimeError naming the reason when there is no usable GPU
        if d.index not in (None, 0):
            raise RuntimeError(f"device {d}: lviv_c uses one GPU (cuda:0)")
    return d


def _on_device(t, dev):
    """t moved to the resolved device dev (None: unchanged); a leaf stays a leaf (requires_grad kept)."""
    if dev is None:
        return t
    code = 1 if dev.type == "cuda" else 0
    if t._device_code == code:
        return t
    rg = t.requires_grad
    r = _C._to_device(_C.detach(t) if rg and t.is_leaf else t, code)
    if rg and t.is_leaf:
        r.requires_grad = True
    return r


class Size(tuple):
    """torch.Size: a tuple of ints."""

    def __repr__(self):
        return f"lviv_c.Size([{', '.join(str(s) for s in self)}])"

    def numel(self):
        n = 1
        for s in self:
            n *= s
        return n


def _to_tensor(x, ref=None):
    """x as a Tensor. With ``ref`` a CUDA tensor, as PyTorch treats scalars: a Python number, a
    NumPy value or array, or a 0-d CPU tensor goes to ref's device (other CPU tensors stay, and
    the op then names both devices)."""
    if isinstance(x, Tensor):
        if ref is not None and x.ndim == 0 and x._device_code != ref._device_code and ref._device_code == 1:
            return _mark_bool(_C._to_device(x, 1)) if _is_bool(x) else _C._to_device(x, 1)
        return x
    if isinstance(x, (bool, numbers.Number)) and not isinstance(x, np.ndarray):
        t = _C.from_numpy(np.array(x, dtype=np.float32))
    else:
        t = tensor(x)
    if ref is not None and ref._device_code == 1:
        t = _mark_bool(_C._to_device(t, 1)) if _is_bool(t) else _C._to_device(t, 1)
    return t


class Tensor(_C.TensorBase):
    """A float32 (or int64) tensor on the CPU, with reverse-mode autograd in C.

    `Tensor(ndarray)` / `Tensor(list)` copies into float32 like `torch.Tensor`; `Tensor(*sizes)`
    makes an uninitialised tensor of that shape."""

    __array_priority__ = 1000

    def __new__(cls, *args, **kwargs):
        obj = _C.TensorBase.__new__(cls)
        if not args:
            _C._assign(obj, _C.empty((0,), 0, True), False)
        elif len(args) == 1 and not isinstance(args[0], numbers.Integral):
            src = args[0]
            if isinstance(src, Tensor):
                _C._assign(obj, src, True)
            else:
                arr = np.array(src, dtype=np.float32)
                _C._assign(obj, _C.from_numpy(arr), False)
        else:
            shape = tuple(int(a) for a in (args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args))
            _C._assign(obj, _C.empty(shape, 0, True), False)
        return obj

    def __init__(self, *args, **kwargs):
        pass

    # ---- properties ----
    @property
    def dtype(self):
        return bool_ if _is_bool(self) else _DTYPES[self._dtype_code]

    @property
    def device(self):
        return device("cuda" if self._device_code else "cpu")

    @property
    def is_cuda(self):
        return self._device_code == 1

    @property
    def grad_fn(self):
        return self._grad_fn_name

    @property
    def data(self):
        """The same storage without autograd history (assigning copies values in)."""
        return _C.detach(self)

    @data.setter
    def data(self, value):
        value = _to_tensor(value)
        if tuple(value.shape) != tuple(self.shape):
            # torch allows a new shape: re-point this tensor to the new storage
            _C._assign(self, value, True)
        else:
            _C.copy_into(self, value)

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    def size(self, dim=None):
        s = Size(self.shape)
        return s if dim is None else s[dim]

    def dim(self):
        return self.ndim

    def numel(self):
        return Size(self.shape).numel()

    def nelement(self):
        return self.numel()

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def element_size(self):
        return 1 if _is_bool(self) else 4 if self._dtype_code == 0 else 8

    def is_floating_point(self):
        return self._dtype_code == 0 and not _is_bool(self)

    def is_contiguous(self):
        return True

    # ---- conversion ----
    def _host_only(self, what):
        if self.is_cuda:  # PyTorch's error and fix
            raise TypeError(f"can't convert cuda:0 device type tensor to numpy ({what}). Use Tensor.cpu() to "
                            "copy the tensor to host memory first.")

    def numpy(self):
        _capture_guard("Tensor.numpy()")
        self._host_only("Tensor.numpy()")
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on a tensor that requires grad. Use tensor.detach().numpy() instead.")
        a = np.asarray(memoryview(self))
        return a != 0 if _is_bool(self) else a

    def __array__(self, dtype=None, copy=None):
        _capture_guard("np.asarray(tensor)")
        self._host_only("np.asarray(tensor)")
        a = np.asarray(memoryview(self))
        return a if dtype is None else a.astype(dtype)

    def tolist(self):
        if self.is_cuda:
            return self.detach().cpu().tolist()
        a = np.asarray(memoryview(self))
        return (a != 0).tolist() if _is_bool(self) else a.tolist()

    def item(self):
        _capture_guard("Tensor.item()")
        if self.numel() != 1:
            raise ValueError(f"only one element tensors can be converted to Python scalars (shape {tuple(self.shape)})")
        if self.is_cuda:  # like torch: a synchronising copy of the one value
            return _C._to_device(_C.detach(self), 0).item()
        v = np.asarray(memoryview(self)).reshape(-1)[0].item()
        return builtins.bool(v) if _is_bool(self) else v

    def __float__(self):
        return builtins.float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self._dtype_code != 1 or self.numel() != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __bool__(self):
        if self.numel() != 1:
            raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
        return builtins.bool(self.item())

    def __repr__(self):
        arr = np.asarray(memoryview(self.detach().cpu() if self.is_cuda else self))
        if _is_bool(self):
            arr = arr != 0
        body = np.array2string(arr, separator=", ", prefix="tensor(", precision=4)
        extra = ", device='cuda:0'" if self.is_cuda else ""
        if self._dtype_code == 1:
            extra += ", dtype=lviv_c.int64"
        if self.grad_fn is not None:
            extra += f", grad_fn={self.grad_fn}"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __format__(self, spec):
        if self.numel() == 1 and spec:
            return format(self.item(), spec)
        return repr(self)

    def __hash__(self):
        return id(self)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __reduce_ex__(self, proto):
        if self.is_cuda:  # like torch: unpickled on the GPU again
            return (_rebuild, (np.array(memoryview(self.detach().cpu())), self.requires_grad, "cuda"))
        return (_rebuild, (np.array(memoryview(self)), self.requires_grad))

    def __deepcopy__(self, memo):
        t = _C.clone(_C.detach(self))
        t.requires_grad = self.requires_grad
        return t

    # ---- device / dtype ----
    def to(self, *args, **kwargs):
        dev = kwargs.get("device")
        dt = kwargs.get("dtype")
        for a in args:
            if isinstance(a, dtype) or (isinstance(a, type) and a in (np.float32, np.int64)):
                dt = a
            elif isinstance(a, (str, device)):
                dev = a
            elif isinstance(a, Tensor):
                dt = a.dtype
        dev = _check_device(dev)
        out = self
        if dt is not None:
            dt = _as_dtype(dt)
            if dt is bool_:
                if not _is_bool(self):
                    out = _mark_bool(self.detach() != 0)
            elif _is_bool(self):   # a mask as numbers: a new, unmarked tensor
                out = _C.clone(_C.detach(self)) if dt.code == 0 else _C.to_dtype(self, dt.code)
            elif dt.code != self._dtype_code:
                out = _C.to_dtype(out, dt.code)
        if dev is not None and out._device_code != (1 if dev.type == "cuda" else 0):
            # like torch: a copy on the other device; the gradient flows back
            moved = _C._to_device(out, 1 if dev.type == "cuda" else 0)
            out = _mark_bool(moved) if _is_bool(out) else moved
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else device)

    def float(self):
        return self.to(float32)

    def double(self):
        return self.to(float32)

    def long(self):
        return self.to(int64)

    def bool(self):
        return self.to(bool_)

    def int(self):
        return self.to(int64)

    def type(self, t=None):
        if t is None:
            if _is_bool(self):
                return "lviv_c.BoolTensor"
            return "lviv_c.FloatTensor" if self._dtype_code == 0 else "lviv_c.LongTensor"
        return self.to(_as_dtype(t))

    # ---- autograd ----
    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        """Gradients of this tensor into the leaves' ``.grad``. As in PyTorch the graph is spent
        afterwards: a second backward through it raises unless ``retain_graph=True``."""
        if gradient is not None:
            gradient = _to_tensor(gradient)
        retain = create_graph if retain_graph is None else retain_graph
        _C.backward(self, gradient, builtins.bool(retain))

    def detach(self):
        return _C.detach(self)

    def detach_(self):
        _C._assign(self, _C.detach(self), False)
        return self

    def requires_grad_(self, requires_grad=True):
        self.requires_grad = requires_grad
        return self

    def retain_grad(self):
        pass

    def zero_(self):
        _C.fill_(self, 2, 0.0)
        return self

    def fill_(self, v):
        _C.fill_(self, 2, builtins.float(v))
        return self

    def normal_(self, mean=0.0, std=1.0):
        _C.fill_(self, 1, builtins.float(mean), builtins.float(std))
        return self

    def uniform_(self, a=0.0, b=1.0):
        _C.fill_(self, 0, builtins.float(a), builtins.float(b))
        return self

    def copy_(self, src):
        src = _to_tensor(src)
        if tuple(src.shape) != tuple(self.shape):
            src = src.expand(*self.shape)
        _C.copy_into(self, src.to(self.dtype))
        return self

    def _inplace(self, other, op):
        _capture_guard("an in-place operation")
        r = op(self.detach(), other.detach() if isinstance(other, Tensor) else other)
        if tuple(r.shape) != tuple(self.shape):
            raise RuntimeError(f"output with shape {tuple(self.shape)} doesn't match the broadcast shape {tuple(r.shape)}")
        _check_inplace(self)
        _C.copy_into(self, r)
        return self

    def add_(self, other, alpha=1):
        return self._inplace(other if alpha == 1 else other * alpha, lambda a, b: a + b)

    def sub_(self, other, alpha=1):
        return self._inplace(other if alpha == 1 else other * alpha, lambda a, b: a - b)

    def mul_(self, other):
        return self._inplace(other, lambda a, b: a * b)

    def div_(self, other):
        return self._inplace(other, lambda a, b: a / b)

    def clamp_(self, min=None, max=None):
        return self._inplace(None, lambda a, b: a.clamp(min, max))

    __iadd__ = add_
    __isub__ = sub_
    __imul__ = mul_
    __itruediv__ = div_

    # ---- arithmetic ----
    def _bin(self, other, op, reverse=False):
        if not isinstance(other, Tensor):
            if isinstance(other, numbers.Number) and not isinstance(other, builtins.bool) or isinstance(other, np.floating):
                c = builtins.float(other)
                if op == ADD:
                    return _C.unary(AFFINE, self, 1.0, c)
                if op == SUB:
                    return _C.unary(AFFINE, self, -1.0, c) if reverse else _C.unary(AFFINE, self, 1.0, -c)
                if op == MUL:
                    return _C.unary(AFFINE, self, c, 0.0)
                if op == DIV:
                    return _C.unary(RDIV, self, c) if reverse else _C.unary(AFFINE, self, 1.0 / c if c != 0 else np.inf, 0.0) if c != 0 else _C.binary(DIV, self, _to_tensor(c, self))
                if op == POW and not reverse:
                    return _C.unary(POWS, self, c)
        other = _to_tensor(other, self)
        if self.ndim == 0 and other._device_code == 1 and self._device_code == 0:
            self = _to_tensor(self, other)   # a 0-d CPU tensor is a scalar to a CUDA tensor
        a, b = (other, self) if reverse else (self, other)
        if a._dtype_code != b._dtype_code or a._dtype_code == 1:
            a, b = a.float(), b.float()
        return _C.binary(op, a, b)

    def __add__(self, o):
        return self._bin(o, ADD)

    def __radd__(self, o):
        return self._bin(o, ADD, True)

    def __sub__(self, o):
        return self._bin(o, SUB)

    def __rsub__(self, o):
        return self._bin(o, SUB, True)

    def __mul__(self, o):
        return self._bin(o, MUL)

    def __rmul__(self, o):
        return self._bin(o, MUL, True)

    def __truediv__(self, o):
        return self._bin(o, DIV)

    def __rtruediv__(self, o):
        return self._bin(o, DIV, True)

    def __pow__(self, o):
        return self._bin(o, POW)

    def __rpow__(self, o):
        return self._bin(o, POW, True)

    def __neg__(self):
        return _C.unary(NEG, self)

    def __pos__(self):
        return self

    def __abs__(self):
        return self.abs()

    def __matmul__(self, o):
        return matmul(self, o)

    def __rmatmul__(self, o):
        return matmul(_to_tensor(o), self)

    def __eq__(self, o):
        return _mark_bool(self._bin(o, EQ))

    def __ne__(self, o):
        return _mark_bool(self._bin(o, NE))

    def __lt__(self, o):
        return _mark_bool(self._bin(o, LT))

    def __le__(self, o):
        return _mark_bool(self._bin(o, LE))

    def __gt__(self, o):
        return _mark_bool(self._bin(o, GT))

    def __ge__(self, o):
        return _mark_bool(self._bin(o, GE))

    add = __add__
    sub = __sub__
    mul = __mul__
    div = __truediv__
    pow = __pow__
    eq, ne, lt, le, gt, ge = __eq__, __ne__, __lt__, __le__, __gt__, __ge__

    def neg(self):
        return _C.unary(NEG, self)

    def exp(self):
        return _C.unary(EXP, self)

    def log(self):
        return _C.unary(LOG, self)

    def log1p(self):
        return _C.unary(LOG1P, self)

    def sqrt(self):
        return _C.unary(SQRT, self)

    def abs(self):
        return _C.unary(ABS, self)

    def sign(self):
        return _C.unary(SIGN, self)

    def tanh(self):
        return _C.unary(TANH, self)

    def sigmoid(self):
        return _C.unary(SIGMOID, self)

    def relu(self):
        return _C.unary(RELU, self)

    def sin(self):
        return _C.unary(SIN, self)

    def cos(self):
        return _C.unary(COS, self)

    def square(self):
        return _C.unary(SQUARE, self)

    def clamp(self, min=None, max=None):
        lo = -np.inf if min is None else builtins.float(min)
        hi = np.inf if max is None else builtins.float(max)
        return _C.unary(CLAMP, self, lo, hi)

    clip = clamp

    def maximum(self, other):
        return self._bin(other, MAXIMUM)

    def minimum(self, other):
        return self._bin(other, MINIMUM)

    # ---- reductions ----
    def _dims(self, dim):
        if dim is None:
            return 0
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        mask = 0
        for d in dims:
            d = int(d)
            if d < -self.ndim or d >= builtins.max(self.ndim, 1):
                raise IndexError(f"Dimension out of range (expected to be in range of [{-self.ndim}, {self.ndim - 1}], but got {d})")
            mask |= 1 << (d % self.ndim if self.ndim else 0)
        return mask

    def sum(self, dim=None, keepdim=False, dtype=None):
        if self._dtype_code == 1:
            return tensor(np.asarray(self).sum(axis=dim, keepdims=keepdim))
        if self.ndim == 0:
            return self.clone()
        return _C.reduce(RSUM, self, self._dims(dim), keepdim)

    def mean(self, dim=None, keepdim=False):
        if self.ndim == 0:
            return self.clone()
        return _C.reduce(RMEAN, self, self._dims(dim), keepdim)

    def var(self, dim=None, unbiased=True, keepdim=False, correction=None):
        c = (1.0 if unbiased else 0.0) if correction is None else builtins.float(correction)
        return _C.reduce(RVAR, self, self._dims(dim), keepdim, c)

    def std(self, dim=None, unbiased=True, keepdim=False, correction=None):
        c = (1.0 if unbiased else 0.0) if correction is None else builtins.float(correction)
        return _C.reduce(RSTD, self, self._dims(dim), keepdim, c)

    def _minmax(self, dim, keepdim, vop, iop, other):
        if isinstance(dim, Tensor):
            return self._bin(dim, MAXIMUM if vop == RMAX else MINIMUM)
        if dim is None:
            return _C.reduce(vop, self, 0, False)
        m = self._dims(dim)
        return _MinMax(_C.reduce(vop, self, m, keepdim), _C.reduce(iop, self, m, keepdim))

    def max(self, dim=None, keepdim=False):
        return self._minmax(dim, keepdim, RMAX, RARGMAX, None)

    def min(self, dim=None, keepdim=False):
        return self._minmax(dim, keepdim, RMIN, RARGMIN, None)

    def amax(self, dim=None, keepdim=False):
        return _C.reduce(RMAX, self, self._dims(dim), keepdim)

    def amin(self, dim=None, keepdim=False):
        return _C.reduce(RMIN, self, self._dims(dim), keepdim)

    def argmax(self, dim=None, keepdim=False):
        return _C.reduce(RARGMAX, self, self._dims(dim), keepdim and dim is not None)

    def argmin(self, dim=None, keepdim=False):
        return _C.reduce(RARGMIN, self, self._dims(dim), keepdim and dim is not None)

    def norm(self, p=2, dim=None, keepdim=False):
        if p == 2:
            return (self * self).sum(dim, keepdim).sqrt()
        if p == 1:
            return self.abs().sum(dim, keepdim)
        return (self.abs() ** p).sum(dim, keepdim) ** (1.0 / p)

    # ---- shape ----
    def _resolve_shape(self, shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, Size)):
            shape = tuple(shape[0])
        shape = list(_int_sizes(shape, "view", "shape"))
        if shape.count(-1) > 1:
            raise RuntimeError("only one dimension can be inferred")
        if -1 in shape:
            known = 1
            for s in shape:
                if s != -1:
                    known *= s
            n = self.numel()
            if known == 0 or n % known:
                raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {n}")
            shape[shape.index(-1)] = n // known
        return tuple(shape)

    def view(self, *shape):
        return _C.reshape(self, self._resolve_shape(shape))

    def reshape(self, *shape):
        return _C.reshape(self, self._resolve_shape(shape))

    def view_as(self, other):
        return self.view(*other.shape)

    def reshape_as(self, other):
        return self.view(*other.shape)

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        s = _wrap_dim(start_dim, self.ndim)
        e = _wrap_dim(end_dim, self.ndim)
        if s > e:
            raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
        shp = self.shape
        n = 1
        for d in shp[s:e + 1]:
            n *= d
        return _C.reshape(self, tuple(shp[:s]) + (n,) + tuple(shp[e + 1:]))

    def squeeze(self, dim=None):
        if dim is None:
            return _C.reshape(self, tuple(s for s in self.shape if s != 1))
        if self.ndim == 0:
            _wrap_dim(dim, 0)
            return self
        d = _wrap_dim(dim, self.ndim)
        if self.shape[d] != 1:
            return self
        return _C.reshape(self, tuple(self.shape[:d]) + tuple(self.shape[d + 1:]))

    def unsqueeze(self, dim):
        d = _wrap_dim(dim, self.ndim + 1)
        return _C.reshape(self, tuple(self.shape[:d]) + (1,) + tuple(self.shape[d:]))

    def permute(self, *dims):
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = dims[0]
        if len(dims) != self.ndim:
            raise RuntimeError(f"permute(sparse_coo): number of dimensions in the tensor input does not "
                               f"match the length of the desired ordering of dimensions i.e. input.dim() "
                               f"= {self.ndim} is not equal to len(dims) = {len(dims)}")
        p = tuple(_wrap_dim(d, self.ndim) for d in dims)
        if len(set(p)) != len(p):
            raise RuntimeError("permute(): duplicate dims are not allowed.")
        return _C.permute(self, p)

    def transpose(self, d0, d1):
        d0, d1 = _wrap_dim(d0, self.ndim), _wrap_dim(d1, self.ndim)
        if self.ndim == 0:
            return self
        p = list(range(self.ndim))
        p[d0], p[d1] = p[d1], p[d0]
        return _C.permute(self, tuple(p))

    def t(self):
        if self.ndim < 2:
            return self
        return self.transpose(0, 1)

    def contiguous(self):
        return self

    def clone(self):
        return _C.clone(self)

    def expand(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = _int_sizes(shape, "expand")
        nd = len(shape)
        full = [s if s != -1 else self.shape[i - (nd - self.ndim)] for i, s in enumerate(shape)]
        if tuple(full) == tuple(self.shape):
            return self
        return _C.expand(self, tuple(full))

    def expand_as(self, other):
        return self.expand(*other.shape)

    def repeat(self, *sizes):
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = tuple(sizes[0])
        out = self
        if len(sizes) > self.ndim:
            out = out.reshape((1,) * (len(sizes) - self.ndim) + tuple(self.shape))
        for d, r in enumerate(sizes):
            if r != 1:
                out = cat([out] * r, d)
        return out

    def index_select(self, dim, index):
        return _C.index_select(self, dim, _index_tensor(index))

    def matmul(self, other):
        return matmul(self, other)

    def mm(self, other):
        return matmul(self, other)

    # ---- indexing ----
    def __getitem__(self, key):
        return _getitem(self, key)

    def __setitem__(self, key, value):
        _capture_guard("tensor[...] = value")
        _check_inplace(self)
        if isinstance(key, tuple):
            key = tuple(_np_key(k) for k in key)
        else:
            key = _np_key(key)
        if isinstance(value, Tensor):
            value = np.asarray(value.detach().cpu() if value.is_cuda else value)
        if self.is_cuda:  # through the host: a copy out, the assignment, a copy back
            host = self.detach().cpu()
            np.asarray(memoryview(host))[key] = value
            _C.copy_into(self, host)
            return
        np.asarray(memoryview(self))[key] = value


def _keeps_bool(name):
    f = getattr(Tensor, name)

    def g(self, *a, **k):
        r = f(self, *a, **k)
        if _is_bool(self) and isinstance(r, Tensor) and r is not self:
            _mark_bool(r)
        return r
    g.__name__ = name
    g.__doc__ = f.__doc__
    setattr(Tensor, name, g)


for _n in ("view", "reshape", "view_as", "reshape_as", "flatten", "squeeze", "unsqueeze", "permute",
           "transpose", "t", "clone", "detach", "expand", "expand_as", "repeat", "index_select"):
    _keeps_bool(_n)


class _MinMax(tuple):
    """(values, indices) named pair returned by max/min with a dim."""

    def __new__(cls, values, indices):
        return super().__new__(cls, (values, indices))

    @property
    def values(self):
        return self[0]

    @property
    def indices(self):
        return self[1]


def _wrap_dim(d, ndim):
    """A dim index in [-ndim, ndim - 1] (ndim 0 counts as 1) -> [0, ndim); IndexError as PyTorch."""
    if not isinstance(d, (numbers.Integral, np.integer)) or isinstance(d, (builtins.bool, np.bool_)):
        raise TypeError(f"a dim must be an int, got {type(d).__name__}")
    n = builtins.max(ndim, 1)
    d = int(d)
    if d < -n or d >= n:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], "
                         f"but got {d})")
    return d % n


def _int_sizes(size, fn, what="size"):
    """A tuple of ints from a size argument; a float (2.5) or other non-integer is a TypeError
    as in PyTorch, not silently truncated."""
    out = []
    for i, s in enumerate(size):
        if isinstance(s, Tensor) and s.numel() == 1 and s._dtype_code == 1 and not _is_bool(s):
            s = int(s.item())
        if not isinstance(s, (numbers.Integral, np.integer)) or isinstance(s, (builtins.bool, np.bool_)):
            raise TypeError(f"{fn}(): argument '{what}' must be tuple of ints, but found element of "
                            f"type {type(s).__name__} at pos {i}")
        out.append(int(s))
    return tuple(out)


def _check_inplace(t):
    """In-place changes are not recorded by lviv_c's autograd: refuse them on tensors it tracks,
    with PyTorch's message for leaves and a message that says what to do for the others."""
    if t.requires_grad and _C.is_grad_enabled():
        if t.is_leaf:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place "
                               "operation.")
        raise RuntimeError(f"in-place operation on a tensor that autograd needs (the output of "
                           f"{t.grad_fn}, which requires grad): lviv_c does not record in-place "
                           f"changes; use the out-of-place form (y = y + 1, y = y * m) or "
                           f"modify y.detach() under no_grad()")


def _capture_guard(what):
    if _C.capture_active():
        from .capture import _guard
        _guard(what)


def _rebuild(arr, requires_grad, device="cpu"):
    t = from_numpy(np.ascontiguousarray(arr))
    if device == "cuda":
        t = _C._to_device(t, 1)
    t.requires_grad = requires_grad
    return t


_INDEX_DTYPE_ERROR = "tensors used as indices must be long, int, byte or bool tensors"


def _np_key(k):
    """A tensor index as NumPy sees it (mask -> bool array, int64 -> int64 array); a float
    tensor raises IndexError, as in PyTorch."""
    if not isinstance(k, Tensor):
        return k
    a = np.asarray(k.cpu() if k.is_cuda else k)
    if _is_bool(k):
        return a != 0
    if k._dtype_code != 1:
        raise IndexError(_INDEX_DTYPE_ERROR)
    return a


def positions(index, size, what="index"):
    """int64 positions in [0, size) of an index along one dim, with PyTorch's rules: a bool mask
    (tensor, array or list) must have length ``size`` and gives the positions of its True
    entries; integers are bounds-checked (negative ones count from the end); floats raise
    IndexError. The one place that turns user indices into positions."""
    kind, arr = _adv_key(index)
    arr = np.atleast_1d(arr)
    if kind == "mask":
        if arr.shape != (size,):
            raise IndexError(f"{what}: the shape of the mask {list(arr.shape)} does not match the "
                             f"size {size} it indexes")
        return np.flatnonzero(arr).astype(np.int64)
    if arr.size and (int(arr.min()) < -size or int(arr.max()) >= size):
        bad = int(arr.max()) if int(arr.max()) >= size else int(arr.min())
        raise IndexError(f"{what}: index {bad} is out of bounds for size {size}")
    return np.where(arr < 0, arr + size, arr).astype(np.int64).reshape(-1)


def _index_tensor(index):
    """The int64 index tensor of index_select (a tensor, list or array of positions)."""
    if isinstance(index, Tensor):
        if index._dtype_code != 1 or _is_bool(index):
            raise RuntimeError(f"index_select(): expected an int64 index tensor, got {index.dtype}")
        return index
    arr = np.asarray(index)
    if arr.size and arr.dtype.kind not in "iu":
        raise RuntimeError(f"index_select(): expected integer positions, got dtype {arr.dtype}")
    return _C.from_numpy(np.ascontiguousarray(arr, dtype=np.int64))


def _adv_key(k):
    """('mask', bool ndarray) or ('pos', int64 ndarray) for an advanced index (tensor, array,
    list); IndexError for anything else (float positions, as in PyTorch)."""
    k = _np_key(k)
    arr = np.asarray(k)
    if arr.dtype == np.bool_:
        if arr.ndim == 0:
            raise IndexError("indexing with a 0-d bool is not supported")
        return "mask", arr
    if arr.dtype.kind in "iu" or (arr.size == 0 and arr.dtype.kind == "f"):
        return "pos", arr.astype(np.int64)
    raise IndexError("only integers, slices (`:`), ellipsis (`...`), None and long or bool "
                     f"tensors/arrays are valid indices (got {arr.dtype} values)")


def _is_scalar_index(k):
    return (isinstance(k, (numbers.Integral, np.integer)) and not isinstance(k, (builtins.bool, np.bool_))) or \
        (isinstance(k, Tensor) and k.ndim == 0 and k._dtype_code == 1 and not _is_bool(k))


def _getitem(t, key):
    """Basic indexing (ints, slices, None, ...) is a strided slice; advanced indices (int64 /
    bool tensors or arrays, lists) follow PyTorch: positions are bounds-checked (negative ones
    count from the end), a bool mask must match the shape of the dims it covers and selects
    the positions of its True entries, several advanced indices broadcast together; they must
    sit on adjacent dims here. Float indices raise IndexError."""
    if not isinstance(key, tuple):
        key = (key,)
    keys = []
    for k in key:
        if k is None or k is Ellipsis or isinstance(k, slice) or _is_scalar_index(k):
            keys.append(k)
        elif isinstance(k, (builtins.bool, np.bool_)):
            raise IndexError("indexing with a Python bool is not supported")
        elif isinstance(k, (builtins.float, np.floating)):
            raise IndexError(_INDEX_DTYPE_ERROR + f" (got the float {k})")
        else:
            keys.append(_adv_key(k))

    def ndims(k):
        if k is None or k is Ellipsis:
            return 0
        return k[1].ndim if isinstance(k, tuple) and k[0] == "mask" else 1

    n_real = builtins.sum(ndims(k) for k in keys)
    if builtins.sum(1 for k in keys if k is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if builtins.any(k is Ellipsis for k in keys):
        i = next(i for i, k in enumerate(keys) if k is Ellipsis)
        keys = keys[:i] + [slice(None)] * builtins.max(0, t.ndim - n_real) + keys[i + 1:]
    if n_real > t.ndim:
        raise IndexError(f"too many indices for tensor of dimension {t.ndim}")
    start, step, length = [], [], []
    shape = t.shape
    d = 0
    post = []  # output dims: ('keep',) / ('drop',) / ('new',) / ('adv',)
    adv_dims, adv_pos = [], []
    for k in keys:
        if k is None:
            post.append(("new",))
            continue
        if isinstance(k, tuple):
            kind, arr = k
            if kind == "mask":
                m = arr.ndim
                if tuple(arr.shape) != tuple(shape[d:d + m]):
                    raise IndexError(f"The shape of the mask {list(arr.shape)} at index {d} does not "
                                     f"match the shape of the indexed tensor {list(shape[d:d + m])} "
                                     f"at index {d}")
                pos = list(np.nonzero(arr))
            else:
                size = shape[d]
                if arr.size:
                    lo, hi = int(arr.min()), int(arr.max())
                    if lo < -size or hi >= size:
                        bad = hi if hi >= size else lo
                        raise IndexError(f"index {bad} is out of bounds for dimension {d} with size {size}")
                pos = [np.where(arr < 0, arr + size, arr)]
            if adv_dims and adv_dims[-1] != d - 1:
                raise IndexError("lviv_c: advanced (tensor, array or list) indices must be on adjacent "
                                 "dimensions")
            if not adv_dims:
                post.append(("adv",))
            for p in pos:
                adv_dims.append(d)
                adv_pos.append(p)
                start.append(0); step.append(1); length.append(shape[d])
                d += 1
            continue
        size = shape[d]
        if not isinstance(k, slice):
            i = int(k)
            if i < -size or i >= size:
                raise IndexError(f"index {i} is out of bounds for dimension {d} with size {size}")
            i %= size
            start.append(i); step.append(1); length.append(1)
            post.append(("drop",))
        else:
            s0, s1, st = k.indices(size)
            if st <= 0:
                raise ValueError("step must be greater than zero")
            ln = builtins.max(0, (s1 - s0 + st - 1) // st)
            start.append(s0 if ln else 0); step.append(st); length.append(ln)
            post.append(("keep",))
        d += 1
    while d < t.ndim:
        start.append(0); step.append(1); length.append(shape[d]); post.append(("keep",)); d += 1
    out = t
    full = builtins.all(s == 0 and st == 1 and ln == sz for s, st, ln, sz in zip(start, step, length, shape))
    if not full:
        # a leading integer/contiguous range on dim 0 with the rest full is a view of the storage
        out = _C.slice(t, tuple(start), tuple(step), tuple(length))
    bshape = ()
    if adv_dims:
        try:
            arrs = np.broadcast_arrays(*adv_pos)
        except ValueError:
            raise IndexError("shape mismatch: indexing tensors could not be broadcast together with "
                             f"shapes {[list(p.shape) for p in adv_pos]}") from None
        bshape = arrs[0].shape
        a0, a1 = adv_dims[0], adv_dims[-1] + 1
        sizes = tuple(shape[a0:a1])
        lin = np.ravel_multi_index(tuple(arrs), sizes) if arrs[0].size else np.zeros(0, np.int64)
        cur = tuple(out.shape)
        merged = cur[:a0] + (int(np.prod(sizes)),) + cur[a1:]
        if merged != cur:
            out = _C.reshape(out, merged)
        idx = _C.from_numpy(np.ascontiguousarray(lin.reshape(-1), dtype=np.int64))
        if out.is_cuda:
            idx = idx.cuda()
        out = _C.index_select(out, a0, idx)
    new_shape = []
    cur = list(out.shape)
    j = 0
    for p in post:
        if p[0] == "new":
            new_shape.append(1)
        elif p[0] == "drop":
            j += 1
        elif p[0] == "adv":
            new_shape.extend(bshape); j += 1
        else:
            new_shape.append(cur[j]); j += 1
    if tuple(new_shape) != tuple(out.shape):
        out = _C.reshape(out, tuple(new_shape))
    return _mark_bool(out) if _is_bool(t) and out is not t else out


# ------------------------------------------------------------------ creation
def from_numpy(arr):
    """A tensor sharing memory with a float32 / int64 C-contiguous NumPy array (else a copy)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(arr).__name__}")
    if arr.dtype == np.bool_:   # a mask (a copy: stored as float32 0/1)
        return _mark_bool(_C.from_numpy(arr.astype(np.float32)))
    if arr.dtype not in (np.float32, np.int64):
        arr = arr.astype(np.int64 if arr.dtype.kind in "iu" else np.float32)
    return _C.from_numpy(arr)


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor copied from data (nested lists, NumPy arrays, scalars or tensors)."""
    dev = _check_device(device)
    dt = _as_dtype(dtype)
    if isinstance(data, Tensor):
        arr = np.array(data.cpu() if data.is_cuda else data)
        if _is_bool(data):
            arr = arr != 0
    else:
        arr = np.array(data)
    if arr.dtype == object:
        raise TypeError("tensor(): could not convert the data to numbers")
    if dt is None:
        dt = bool_ if arr.dtype == np.bool_ else int64 if arr.dtype.kind in "iu" else float32
    if dt is bool_:
        t = _mark_bool(_on_device(_C.from_numpy(np.array(arr != 0, dtype=np.float32, order="C")), dev))
    else:
        t = _on_device(_C.from_numpy(np.array(arr, dtype=dt.np, order="C", copy=True)), dev)
    if requires_grad:
        t.requires_grad = True
    return t


as_tensor = tensor


def _shape_args(size, fn="empty"):
    if len(size) == 1 and isinstance(size[0], (tuple, list, Size)):
        size = tuple(size[0])
    size = _int_sizes(size, fn)
    if builtins.any(s < 0 for s in size):
        raise RuntimeError(f"{fn}(): trying to create tensor with negative dimension: {list(size)}")
    return size


def _new(size, dtype, device, requires_grad, zero, fill=None, fn="empty"):
    """A new tensor; fill(t) initialises it on the CPU (same random stream as a CPU tensor)
    before it moves to the device, so device='cuda' draws the same numbers as device='cpu'."""
    dev = _check_device(device)
    dt = _as_dtype(dtype) or float32
    t = _C.empty(_shape_args(size, fn), dt.code, zero)
    if fill is not None:
        fill(t)
    if dt is bool_:
        t = (t != 0)
    t = _on_device(t, dev)
    if dt is bool_:
        _mark_bool(t)
    if requires_grad:
        t.requires_grad = True
    return t


def empty(*size, dtype=None, device=None, requires_grad=False):
    return _new(size, dtype, device, requires_grad, False, fn="empty")


def zeros(*size, dtype=None, device=None, requires_grad=False):
    return _new(size, dtype, device, requires_grad, True, fn="zeros")


def ones(*size, dtype=None, device=None, requires_grad=False):
    return _new(size, dtype, device, requires_grad, False, lambda t: _C.fill_(t, 2, 1.0), fn="ones")


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    v = builtins.float(fill_value)
    return _new((size,), dtype, device, requires_grad, False, lambda t: _C.fill_(t, 2, v), fn="full")


def rand(*size, dtype=None, device=None, requires_grad=False):
    return _new(size, dtype, device, requires_grad, False, lambda t: _C.fill_(t, 0, 0.0, 1.0), fn="rand")


def randn(*size, dtype=None, device=None, requires_grad=False):
    return _new(size, dtype, device, requires_grad, False, lambda t: _C.fill_(t, 1, 0.0, 1.0), fn="randn")


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    _check_device(device)
    if end is None:
        start, end = 0, start
    arr = np.arange(start, end, step)
    dt = _as_dtype(dtype) or (int64 if arr.dtype.kind in "iu" else float32)
    return tensor(arr.astype(dt.np), device=device, requires_grad=requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    _check_device(device)
    return tensor(np.linspace(start, end, steps, dtype=np.float32), device=device, requires_grad=requires_grad)


def _like(fn, t, dtype=None, device=None, **kw):
    return fn(*t.shape, dtype=dtype or t.dtype, device=device if device is not None else t.device, **kw)


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    return _like(zeros, t, dtype, device, requires_grad=requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    return _like(ones, t, dtype, device, requires_grad=requires_grad)


def empty_like(t, dtype=None, device=None, requires_grad=False):
    return _like(empty, t, dtype, device, requires_grad=requires_grad)


def rand_like(t, dtype=None, device=None, requires_grad=False):
    return _like(rand, t, dtype, device, requires_grad=requires_grad)


def randn_like(t, dtype=None, device=None, requires_grad=False):
    return _like(randn, t, dtype, device, requires_grad=requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    return full(tuple(t.shape), fill_value, dtype=dtype or t.dtype,
                device=device if device is not None else t.device, requires_grad=requires_grad)


def manual_seed(seed):
    """Seed lviv_c's random generator (rand, randn, init, readout noise, dropout)."""
    _C.manual_seed(int(seed))
    return None


# ------------------------------------------------------------------ functions
def matmul(a, b):
    a, b = _to_tensor(a), _to_tensor(b)
    if a.ndim == 1 and b.ndim == 1:
        return (a * b).sum()
    if a.ndim == 1:
        return matmul(a.unsqueeze(0), b).squeeze(-2)
    if b.ndim == 1:
        return matmul(a, b.unsqueeze(1)).squeeze(-1)
    if a.ndim > 3 and b.ndim == 2:
        lead = tuple(a.shape[:-1])
        return _C.matmul(a.reshape(-1, a.shape[-1]), b).reshape(*lead, b.shape[-1])
    if a.ndim > 3 or b.ndim > 3:
        raise ValueError(f"matmul: batched products of more than 3 dims are not supported (shapes {tuple(a.shape)} and {tuple(b.shape)})")
    if a.ndim == 3 and b.ndim == 2:
        B, n, k = a.shape
        return _C.matmul(a.reshape(B * n, k), b).reshape(B, n, b.shape[1])
    return _C.matmul(a, b)


mm = matmul


def cat(tensors, dim=0):
    tensors = [_to_tensor(t) for t in tensors]
    if len(tensors) == 1:
        return tensors[0]
    out = _C.cat(tensors, dim)
    return _mark_bool(out) if builtins.all(_is_bool(t) for t in tensors) else out


concatenate = cat


def stack(tensors, dim=0):
    tensors = [_to_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("stack expects a non-empty list of tensors")
    shp = tuple(tensors[0].shape)
    for i, t in enumerate(tensors):
        if tuple(t.shape) != shp:
            raise ValueError(f"stack expects each tensor to be equal size, but got {shp} at entry 0 and {tuple(t.shape)} at entry {i}")
    return cat([t.unsqueeze(dim) for t in tensors], dim)


def _fn(name):
    def f(t, *a, **k):
        return getattr(_to_tensor(t), name)(*a, **k)
    f.__name__ = name
    return f


for _n in ("exp log log1p sqrt abs sign tanh sigmoid relu sin cos square clamp clip sum mean var std "
           "max min amax amin argmax argmin flatten squeeze unsqueeze permute transpose reshape "
           "index_select norm neg t").split():
    globals()[_n] = _fn(_n)


def maximum(a, b):
    return _to_tensor(a).maximum(b)


def minimum(a, b):
    return _to_tensor(a).minimum(b)


def where(cond, a, b):
    """torch.where(cond, a, b): a where cond is true, else b, broadcast together; a select (an
    inf or NaN in the branch not taken stays out of the result and of the gradient)."""
    ref = next((t for t in (cond, a, b) if isinstance(t, Tensor) and t.is_cuda), None)
    cond = _to_tensor(cond, ref).float()
    a, b = _to_tensor(a, ref).float(), _to_tensor(b, ref).float()
    try:
        shape = np.broadcast_shapes(tuple(cond.shape), tuple(a.shape), tuple(b.shape))
    except ValueError:
        raise ValueError(f"where: shapes {tuple(cond.shape)}, {tuple(a.shape)} and {tuple(b.shape)} "
                         "cannot be broadcast together") from None
    cond, a, b = (t if tuple(t.shape) == shape else t.expand(*shape) for t in (cond, a, b))
    return _C.where(cond, a, b)


def is_tensor(x):
    return isinstance(x, Tensor)


def numel(t):
    return t.numel()


def allclose(a, b, rtol=1e-5, atol=1e-8):
    return builtins.bool(np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol))


# ------------------------------------------------------------------ grad mode
class no_grad(contextlib.ContextDecorator):
    """Disable gradient recording (context manager and decorator)."""

    def __enter__(self):
        self.prev = _C.set_grad_enabled(False)
        return self

    def __exit__(self, *exc):
        _C.set_grad_enabled(self.prev)
        return False


class enable_grad(contextlib.ContextDecorator):
    def __enter__(self):
        self.prev = _C.set_grad_enabled(True)
        return self

    def __exit__(self, *exc):
        _C.set_grad_enabled(self.prev)
        return False


class set_grad_enabled(contextlib.ContextDecorator):
    def __init__(self, mode):
        self.prev = _C.set_grad_enabled(builtins.bool(mode))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _C.set_grad_enabled(self.prev)
        return False


def is_grad_enabled():
    return _C.is_grad_enabled()


inference_mode = no_grad

_C._set_tensor_class(Tensor)
