# duet: the single entry point. Every target bootstraps what it needs on a fresh machine.
#
#   make demo    run the main job on mock/simulated hardware
#   make test    run the test suite (what CI runs); deterministic hypothesis examples (profile ci);
#                `make test HYPOTHESIS_PROFILE=dev` explores new random examples
#   make bench   run the benchmarks (they print figures)
#   make lint    ruff
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

.PHONY: setup apt demo test bench lint clean

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

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) ros2_ws/build ros2_ws/install ros2_ws/log
