# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
export RAY_AUTH_MODE ?= disabled

.PHONY: demo test install clean mutation

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) sweeps/omega_sensitivity.py --preset demo

test: install
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# Mutation testing on demand, never in `make test` or CI (docs/MUTATION.md): a fresh mutmut run over
# core/'s equations, losses, margins, imbalance and accuracy report, then its score.
mutation: install
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children 2
	$(VENV)/bin/mutmut export-cicd-stats
	$(PY) -c "import json; s = json.load(open('mutants/mutmut-cicd-stats.json')); \
	caught = s['killed'] + s['timeout']; judged = caught + s['survived'] + s['no_tests'] + s['suspicious']; \
	print(f'mutation score: {caught}/{judged} = {100 * caught / judged:.1f} %', s)"
	$(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) results .pytest_cache mutants
