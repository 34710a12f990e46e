# The two commands a newcomer needs: `make demo` and `make test`. Both do all set-up first (as root on
# Debian/Ubuntu: system packages, a venv, an editable install); set-up is skipped when already done. The demo
# installs only what the demo needs; the tests, everything their real servers need.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
DEMO_PACKAGES := iperf3 python3-venv python3-pip
TEST_PACKAGES := $(DEMO_PACKAGES) python3-dev gcc redis-server iproute2 nftables iptables \
	libnetfilter-queue-dev victoria-metrics influxdb golang-go golang-github-vmware-govmomi-dev openssl chromium
# servers the tests start themselves: when make installs them, it keeps Debian from running them as services
TEST_SERVICES := redis-server influxdb victoria-metrics
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed
# a variable, since a comma inside $(call ...) would split the argument
TEST_INSTALL := .[test,lab]

.PHONY: demo test lint docs setup vcsim clean

demo: $(DEMO_STAMP)
	$(VENV)/bin/vtax demo

test: setup vcsim
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q --durations=25

lint: setup
	$(VENV)/bin/ruff check .

# the reference pages generated from the code (spec models, metric tables, commands); a test fails when stale
docs: setup
	$(PY) docs/generate.py

setup: $(STAMP)

# the vCenter simulator of the vSphere tests, built from deploy/vcsim against Debian's govmomi source
vcsim: setup
	$(PY) tests/vcsim.py --build

# install the Debian packages of $(1) that are missing; servers the tests start themselves are not left running
define packages
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		for svc in $(TEST_SERVICES); do case " $$missing " in *" $$svc "*) \
			systemctl disable --now $$svc >/dev/null 2>&1 || true;; esac; done; \
	fi
endef

define venv
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "vtax needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) --version 2>&1). Use make PYTHON=python3.11 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '$(1)'
endef

$(DEMO_STAMP): pyproject.toml
	$(call packages,$(DEMO_PACKAGES))
	$(call venv,.)
	touch $(DEMO_STAMP)

$(STAMP): pyproject.toml
	$(call packages,$(TEST_PACKAGES))
	$(call venv,$(TEST_INSTALL))
	touch $(STAMP) $(DEMO_STAMP)

clean:
	rm -rf $(VENV) .pytest_cache vtax.db build
