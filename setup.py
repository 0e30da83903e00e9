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
          "-fno-strict-aliasing", "-D_GNU_SOURCE", "-DLV_BLAS_PREFIX=1",
          # no value changes (no kernel reads the FP exception flags or errno): gcc then if-converts
          # and vectorises select-and-convert loops such as the fused BatchNorm+ELU (csrc/cpu/norm.c)
          # and loops with sqrtf (Adam)
          "-fno-trapping-math", "-fno-math-errno"]
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


def _nvidia_wheel_dirs():
    """Folders of NVIDIA's pip packages (nvidia/cudnn, nvidia/cublas, ...) on this Python's path."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        spec = None
    return list(spec.submodule_search_locations) if spec and spec.submodule_search_locations else []


def _cuda_library(home, name, header):
    """Where to find one CUDA library (name 'cudnn' or 'cublas') and how to link it: first the
    toolkit of the nvcc in use, then NVIDIA's pip packages (nvidia/<name>/{include,lib}, which
    hold only versioned files such as libcudnn.so.9: linked as -l:libcudnn.so.9). Returns
    (include_dir or None, lib_dir, link flag) or None when the library is nowhere."""
    cands = [(f"{home}/include", d) for d in (f"{home}/lib64", f"{home}/lib", f"{home}/targets/x86_64-linux/lib")]
    for root in _nvidia_wheel_dirs():
        for pkg in (name, "cu13", "cu12"):  # cuBLAS may sit in nvidia/cu13/ in newer wheels
            cands.append((os.path.join(root, pkg, "include"), os.path.join(root, pkg, "lib")))
    for inc, lib in cands:
        if not os.path.isdir(lib):
            continue
        inc = inc if os.path.exists(os.path.join(inc, header)) else None
        if os.path.exists(os.path.join(lib, f"lib{name}.so")):
            return inc, lib, f"-l{name}"
        versioned = sorted(glob.glob(os.path.join(lib, f"lib{name}.so.[0-9]*")), key=len)
        if versioned:
            return inc, lib, "-l:" + os.path.basename(versioned[0])
    return None


def cuda_config():
    """What the CUDA build uses: nvcc, the toolkit, and cuBLAS/cuDNN headers and libraries
    (`python setup.py --cuda-config` prints it; scripts/gpu-check shows it before building)."""
    cu = _find_cuda()
    if cu is None:
        return {"nvcc": None, "why": "nvcc not found (or LVIV_NO_CUDA set)"}
    nvcc, home = cu
    cfg = {"nvcc": nvcc, "home": home, "archs": CUDA_ARCHS, "libs": {}}
    for name, header in (("cublas", "cublas_v2.h"), ("cudnn", "cudnn.h")):
        found = _cuda_library(home, name, header)
        cfg["libs"][name] = None if found is None else {"include": found[0], "lib": found[1], "link": found[2]}
    missing = [n for n, v in cfg["libs"].items() if v is None or v["include"] is None]
    if missing:
        cfg["why"] = "not found (headers and library): " + ", ".join(missing)
    return cfg


CUDA_ARCHS = os.environ.get("LVIV_CUDA_ARCHS", "80;90")


class BuildExt(build_ext):
    """Builds the C extension as usual; the CUDA module is compiled by nvcc into a shared object
    that is only loaded on demand (import lviv_c never needs libcudart)."""

    def run(self):
        super().run()
        cu_files = sorted(glob.glob(os.path.join("cuda", "*.cu")))
        cfg = cuda_config()
        if cfg["nvcc"] is None or not cu_files:
            print("lviv_c: nvcc not found, building without the CUDA backend")
            return
        if cfg.get("why"):
            print(f"lviv_c: CUDA backend not built: cuBLAS/cuDNN {cfg['why']}; the CPU build is complete")
            return
        nvcc, home = cfg["nvcc"], cfg["home"]
        out_dir = os.path.join(self.build_lib, "lviv_c") if not self.inplace else os.path.join(HERE, "lviv_c")
        os.makedirs(out_dir, exist_ok=True)
        import sysconfig
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        target = os.path.join(out_dir, "_cuda" + suffix)
        py_inc = sysconfig.get_paths()["include"]
        gencode = []
        for a in CUDA_ARCHS.split(";"):
            gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
        libs = list(cfg["libs"].values())
        incs = list(dict.fromkeys([f"{home}/include"] + [v["include"] for v in libs]))
        libdirs = list(dict.fromkeys([d for d in (f"{home}/lib64", f"{home}/lib") if os.path.isdir(d)]
                                     + [v["lib"] for v in libs]))
        # cudart is linked statically (the module then needs only the driver, libcublas and
        # libcudnn at import); cuBLAS/cuDNN are found through the rpath of where they were found
        cmd = [nvcc, "-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden",
               "-cudart", "static", "--threads", os.environ.get("LVIV_NVCC_THREADS", "0"), *gencode,
               "-Icsrc", "-Icuda", f"-I{py_inc}", *[f"-I{d}" for d in incs], "-o", target, *cu_files,
               *[f"-L{d}" for d in libdirs], *[f"-Xlinker=-rpath,{d}" for d in libdirs],
               *[v["link"] for v in libs]]
        print(" ".join(cmd))
        try:
            subprocess.check_call(cmd)
        except (subprocess.CalledProcessError, OSError) as e:
            print(f"lviv_c: CUDA backend not built ({e}); the CPU build is complete")


if "--cuda-config" in sys.argv:
    import json
    print(json.dumps(cuda_config(), indent=1))
    sys.exit(0)

setup(ext_modules=[ext_c], cmdclass={"build_ext": BuildExt})
