# The two commands of the README. Both set up what they need first (scripts/setup.sh, idempotent).
PROFILE ?= mini
PYTEST_ARGS ?=

.PHONY: setup book test rehearsal bench-gpu
setup:
	@bash scripts/setup.sh

book: setup
	.venv/bin/hrvlm book --profile $(PROFILE)

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)

# The full profile's code path on fabricated data with random-init ViT-B/32, alone, with its chapter times
# printed (`make test` runs it too).
rehearsal: setup
	.venv/bin/python -m pytest -s tests/test_rehearsal.py -k rehearsal_book

# Every GPU figure of benchmarks/NOTES.md (issue 13) on a CUDA machine, about 5 minutes of an H100, nothing
# downloaded. No setup step (GPU machines often have no package index): any Python with torch, torchvision,
# open_clip_torch and torchattacks. GPU names the JSON files, e.g. make bench-gpu GPU=h100
PYTHON ?= python3
GPU ?= gpu
bench-gpu:
	mkdir -p benchmarks/results
	PYTHONPATH=. $(PYTHON) -m hrvlm.cli bench perf --json benchmarks/results/$(GPU).json
	PYTHONPATH=. $(PYTHON) -m hrvlm.cli bench attacks --compile --channels-last --json benchmarks/results/$(GPU)-switches.json
	PYTHONPATH=. $(PYTHON) -m hrvlm.cli bench gradients --json benchmarks/results/$(GPU)-gradients.json
