"""Build lviv_c._C (C11 core + CPU kernels) and, when nvcc is found, lviv_c._cuda."""
import glob
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _openblas():
    try:
        import scipy_openblas32 as sob
    except ImportError:
        sys.exit("lviv_c needs scipy-openblas32 to build (pip install scipy-openblas32)")
    return sob.get_include_dir(), sob.get_lib_dir(), sob.get_library()


def _numpy_include():
    import numpy
    return numpy.get_include()


def c_sources():
    files = sorted(glob.glob(os.path.join("csrc", "**", "*.c"), recursive=True))
    return [f for f in files if "/tests/" not in f.replace(os.sep, "/") and "/fuzz/" not in f]


SANITIZE = os.environ.get("LVIV_SANITIZE")  # e.g. "address" for the ASan test target
inc, libdir, lib = _openblas()
cflags = ["-std=c11", "-O3" if not SANITIZE else "-O1", "-fopenmp", "-Wall", "-Wno-unused-function", "-Wno-psabi",
          "-fno-strict-aliasing", "-D_GNU_SOURCE", "-DLV_BLAS_PREFIX=1"]
ldflags = ["-fopenmp", f"-Wl,-rpath,{libdir}"]
if SANITIZE:
    cflags += [f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer", "-g"]
    ldflags += [f"-fsanitize={SANITIZE}"]

ext_c = Extension(
    "lviv_c._C",
    sources=c_sources(),
    include_dirs=["csrc", inc, _numpy_include()],
    library_dirs=[libdir],
    libraries=[lib],
    extra_compile_args=cflags,
    extra_link_args=ldflags,
)


def _find_cuda():
    nvcc = shutil.which("nvcc")
    if nvcc is None and os.path.exists("/usr/local/cuda/bin/nvcc"):
        nvcc = "/usr/local/cuda/bin/nvcc"
    if nvcc is None or os.environ.get("LVIV_NO_CUDA"):
        return None
    home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    return nvcc, home


CUDA_ARCHS = os.environ.get("LVIV_CUDA_ARCHS", "80;90")


class BuildExt(build_ext):
    """Builds the C extension as usual; the CUDA module is compiled by nvcc into a shared object
    that is only loaded on demand (import lviv_c never needs libcudart)."""

    def run(self):
        super().run()
        cu = _find_cuda()
        cu_files = sorted(glob.glob(os.path.join("cuda", "*.cu")))
        if cu is None or not cu_files:
            print("lviv_c: nvcc not found, building without the CUDA backend")
            return
        nvcc, home = cu
        out_dir = os.path.join(self.build_lib, "lviv_c") if not self.inplace else os.path.join(HERE, "lviv_c")
        os.makedirs(out_dir, exist_ok=True)
        import sysconfig
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        target = os.path.join(out_dir, "_cuda" + suffix)
        py_inc = sysconfig.get_paths()["include"]
        gencode = []
        for a in CUDA_ARCHS.split(";"):
            gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
        libdirs = [d for d in (f"{home}/lib64", f"{home}/lib") if os.path.isdir(d)]
        # cudart is linked statically (the module then needs only the driver, libcublas and
        # libcudnn at import); cuBLAS/cuDNN are found through the rpath of the toolkit used
        cmd = [nvcc, "-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden",
               "-cudart", "static", "--threads", os.environ.get("LVIV_NVCC_THREADS", "0"), *gencode,
               "-Icsrc", "-Icuda", f"-I{py_inc}", f"-I{home}/include", "-o", target, *cu_files,
               *[f"-L{d}" for d in libdirs], *[f"-Xlinker=-rpath,{d}" for d in libdirs],
               "-lcublas", "-lcudnn"]
        print(" ".join(cmd))
        try:
            subprocess.check_call(cmd)
        except (subprocess.CalledProcessError, OSError) as e:
            print(f"lviv_c: CUDA backend not built ({e}); the CPU build is complete")


setup(ext_modules=[ext_c], cmdclass={"build_ext": BuildExt})
