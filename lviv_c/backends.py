"""Switches of the GPU backend, under PyTorch's names (``torch.backends``)::

    lviv_c.backends.cudnn.deterministic = True     # default True here (PyTorch: False)
    lviv_c.backends.cudnn.benchmark = False        # default False (as PyTorch)
    lviv_c.backends.cudnn.allow_tf32 = False       # default False here (PyTorch: True)
    lviv_c.backends.cuda.matmul.allow_tf32 = False  # default False (as PyTorch)

    with lviv_c.backends.cudnn.flags(deterministic=False, benchmark=True):
        ...                                         # the fastest convolutions, for a while

- ``cudnn.deterministic``: only cuDNN convolution algorithms whose results are reproducible bit
  for bit (no atomics). On by default here, so that a training run on the GPU repeats.
- ``cudnn.benchmark``: time every candidate algorithm once per shape and take the fastest
  (``cudnnFind``); off, cuDNN's heuristics choose (no timing, the same choice on every run).
  With ``deterministic`` on, the fastest deterministic one. The fastest of all: both switches
  ``deterministic=False, benchmark=True``.
- ``cudnn.allow_tf32`` / ``cuda.matmul.allow_tf32``: TF32 tensor cores (Ampere and newer) in
  convolutions / matmuls: faster, with a 10-bit mantissa in the products. TF32 does not make
  results vary between runs, but it moves them ~1e-3 away from the CPU's float32; both are off
  by default here so GPU results match the CPU to float32 rounding (PyTorch turns cuDNN's on).

The switches live in the C core (``_C._device_flags()``), so they exist, can be set and read on
a build without CUDA too; the CUDA backend reads them at each op (a change applies to the next
convolution or matmul). The emulated test device (``LVIV_EMULATE_CUDA=1``) ignores them.
"""
import contextlib

from . import _C

__all__ = ["cudnn", "cuda"]


def _as_bool(value, name):
    if isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


class _Switch:
    """One switch of the core (csrc/backend.h lv_device_flags), as a settable attribute."""

    def __init__(self, flag, name, doc):
        self.flag, self.name, self.__doc__ = flag, name, doc

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        return bool(_C._device_flags()[self.flag])

    def __set__(self, obj, value):
        _C._set_device_flag(self.flag, _as_bool(value, self.name))


class _Namespace:
    __slots__ = ()

    def __setattr__(self, key, value):  # a typo must not pass silently as a new attribute
        if not isinstance(getattr(type(self), key, None), _Switch):
            raise AttributeError(f"{self._path} has no switch {key!r} "
                                 f"(known: {', '.join(self._names())})")
        object.__setattr__(self, key, value)

    @classmethod
    def _names(cls):
        return [k for k, v in vars(cls).items() if isinstance(v, _Switch)]

    def __repr__(self):
        return f"<{self._path}: " + ", ".join(f"{k}={getattr(self, k)}" for k in self._names()) + ">"


class _Cudnn(_Namespace):
    _path = "lviv_c.backends.cudnn"
    deterministic = _Switch("cudnn_deterministic", "lviv_c.backends.cudnn.deterministic",
                            "only deterministic cuDNN algorithms (default True)")
    benchmark = _Switch("cudnn_benchmark", "lviv_c.backends.cudnn.benchmark",
                        "time the candidate algorithms and take the fastest (default False)")
    allow_tf32 = _Switch("cudnn_allow_tf32", "lviv_c.backends.cudnn.allow_tf32",
                         "TF32 tensor cores in cuDNN convolutions (default False)")

    @contextlib.contextmanager
    def flags(self, deterministic=None, benchmark=None, allow_tf32=None):
        """Set some switches for the duration of a with-block (as torch.backends.cudnn.flags)."""
        new = {"deterministic": deterministic, "benchmark": benchmark, "allow_tf32": allow_tf32}
        old = {k: getattr(self, k) for k in new}
        try:
            for k, v in new.items():
                if v is not None:
                    setattr(self, k, v)
            yield
        finally:
            for k, v in old.items():
                setattr(self, k, v)


class _Matmul(_Namespace):
    _path = "lviv_c.backends.cuda.matmul"
    allow_tf32 = _Switch("matmul_allow_tf32", "lviv_c.backends.cuda.matmul.allow_tf32",
                         "TF32 tensor cores in cuBLAS matmuls (default False)")


class _Cuda(_Namespace):
    _path = "lviv_c.backends.cuda"
    matmul = _Matmul()


cudnn = _Cudnn()
cuda = _Cuda()
