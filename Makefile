# Two Python worlds, two virtual environments (see README.md):
#   .venvs/backend  - torch, diffusers, transformers: runs SCAIL-2
#   .venvs/blender  - Blender as a Python module (bpy) for the add-on's tests
#   .venvs/blender45 - Blender 4.5 LTS as a Python module (oldest supported release)
#   .venvs/stubs-*   - fake-bpy-module API stubs of 4.5 and 5.2, for static checks
PYTHON ?= python3
VENVS := .venvs
# The environments live outside the source tree (one folder per checkout); .venvs links to it.
VENV_HOME ?= $(HOME)/.cache/scail2-addon/venvs/$(shell printf %s "$(CURDIR)" | md5sum | cut -c1-12)
BACKEND_PY := $(VENVS)/backend/bin/python
BLENDER_PY := $(VENVS)/blender/bin/python
BLENDER45_PY := $(VENVS)/blender45/bin/python
PYTEST_FLAGS ?= -q

.PHONY: setup demo extension test test-fast test-backend test-blender test-blender45 test-blender52 clean

STUBS := $(VENVS)/stubs-4.5/.installed $(VENVS)/stubs-5.2/.installed

setup: $(VENVS)/backend/.installed $(VENVS)/blender/.installed $(VENVS)/blender45/.installed $(STUBS)

$(VENVS):
	mkdir -p $(VENV_HOME)
	ln -sfn $(VENV_HOME) $(VENVS)

# A venv is rebuilt when its pinned requirements change.
$(VENVS)/%/.installed: requirements/%.txt | $(VENVS)
	rm -rf $(VENVS)/$*
	$(PYTHON) -m venv $(VENVS)/$*
	$(VENVS)/$*/bin/python -m pip install -q --upgrade pip
	$(VENVS)/$*/bin/python -m pip install -q -r $<
	touch $@

# fake-bpy-module stubs are read as text by tests/blender/test_api_stubs.py, never imported.
$(VENVS)/stubs-%/.installed: requirements/stubs-%.txt | $(VENVS)
	rm -rf $(VENVS)/stubs-$*
	$(PYTHON) -m pip install -q --no-deps --target $(VENVS)/stubs-$* -r $<
	touch $@

# The add-on in the bpy module drives a real backend worker (tiny profile unless SCAIL2_WEIGHTS is set).
demo: setup
	rm -rf build/demo
	BLENDER_USER_RESOURCES=$(CURDIR)/build/demo/blender-user $(BLENDER_PY) demo/blender_demo.py build/demo

# The zip to install in Blender: with a Blender application (`make extension BLENDER=blender`), or else with
# the bpy module of the test environment.
BLENDER ?=
extension: $(if $(BLENDER),,$(VENVS)/blender/.installed)
	$(if $(BLENDER),$(PYTHON),$(BLENDER_PY)) packaging/build_extension.py $(if $(BLENDER),--blender $(BLENDER)) build/scail2.zip

# Runs every suite, then fails if any of them failed.
test: setup
	@status=0; \
	$(MAKE) --no-print-directory test-backend || status=1; \
	$(MAKE) --no-print-directory test-blender || status=1; \
	$(MAKE) --no-print-directory test-blender45 || status=1; \
	exit $$status

# While working: the tests a change to one area needs, in under 3 minutes.
#   make test-fast AREA=backend/review   one source folder's tests (tests mirror the source paths: backend/X,
#                                        protocol, and the add-on's core, runtime, sources); SLOW=1 adds the
#                                        area's `slow` ones (real workers, Blender children)
#   make test-fast                       everything not marked `slow` (real workers, whole generations, Blender
#                                        children), in the backend, protocol and add-on plain-module suites
# CI runs `make test`, which runs everything. Timings: bench/RESULTS.md.
AREA ?=
FAST := -m "not slow" -p no:cacheprovider --durations=10  # the ten slowest: candidates for the slow mark
AREA_TESTS = $(if $(filter backend/% protocol,$(AREA)),tests/$(AREA),tests/blender/$(AREA))
AREA_PY = $(if $(filter backend/% protocol,$(AREA)),$(BACKEND_PY),$(BLENDER_PY))

test-fast:
ifneq ($(AREA),)
	@test -d $(AREA_TESTS) || { echo "test-fast: no tests for AREA=$(AREA) (looked in $(AREA_TESTS))"; exit 2; }
	@$(AREA_PY) -m pytest -c tests/pytest.ini $(PYTEST_FLAGS) $(if $(SLOW),,-m "not slow") -p no:cacheprovider \
		--durations=5 $(AREA_TESTS); status=$$?; \
	if [ $$status = 5 ]; then echo "test-fast: every test of $(AREA_TESTS) is marked slow: run with SLOW=1"; status=0; fi; \
	exit $$status
else
	@status=0; \
	$(BACKEND_PY) -m pytest -c tests/pytest.ini $(PYTEST_FLAGS) $(FAST) tests/protocol tests/backend || status=1; \
	$(BLENDER_PY) -m pytest -c tests/pytest.ini $(PYTEST_FLAGS) $(FAST) tests/blender/core tests/blender/test_layers.py \
		|| status=1; \
	exit $$status
endif

test-backend:
	$(BACKEND_PY) -m pytest -c tests/pytest.ini $(PYTEST_FLAGS) tests/backend tests/protocol

test-blender:
	$(BLENDER_PY) -m pytest -c tests/pytest.ini $(PYTEST_FLAGS) tests/blender tests/protocol

test-blender45:
	$(BLENDER45_PY) -m pytest -c tests/pytest.ini $(PYTEST_FLAGS) -m lts tests/blender

# A real Blender application (BLENDER=..., `blender` on PATH, or the Debian chroot of README.md): install,
# enable, a tiny Generate and both imports. Not part of `make test`: without such a Blender it only says "skipped".
test-blender52:
	$(PYTHON) tests/blender52/run.py

clean:
	rm -rf $(VENV_HOME) $(VENVS) build
