# make demo : install into .venv, build, run the main job on the built-in synthetic data
# make test : install into .venv, build, run the test suite, then the CUDA tests on the emulated device
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-stamp

.PHONY: all build test demo bench asan clean

all: build

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q numpy scipy-openblas32 setuptools wheel pytest tqdm matplotlib nbformat nbclient ipykernel
	$(VPY) -m pip install -q "ray[default]" pyyaml psutil   # lviv_c[distributed]: the sweep tests' Ray cluster
	touch $(STAMP)

build: $(STAMP)
	$(VPY) setup.py -q build_ext --inplace

test: build
	$(VPY) -m pytest -q -x tests
	LVIV_EMULATE_CUDA=1 $(VPY) -m pytest -q -x -m cuda tests

demo: build
	$(VPY) -m lviv_c demo

bench: build
	$(VPY) bench/run_all.py

# C core under AddressSanitizer: rebuilds into a separate copy and runs the reader/ops tests
asan: $(STAMP)
	bash scripts/asan-test tests/test_npy.py tests/test_fuzz_npy.py tests/test_fuzz_pt.py tests/test_load_hostile.py tests/test_dataset.py tests/test_tensor.py tests/test_capture.py tests/test_kernels_raw.py tests/test_analysis_core.py tests/test_analysis_paths.py tests/test_cuda_switches.py tests/test_fused_step.py

clean:
	rm -rf build lviv_c/*.so
