# The two commands of the README. Both set up what they need first (scripts/setup.sh, idempotent).
PROFILE ?= mini
PYTEST_ARGS ?=

.PHONY: setup book test
setup:
	@bash scripts/setup.sh

book: setup
	.venv/bin/hrvlm book --profile $(PROFILE)

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)
