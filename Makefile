# sealer-registry: keep a sealer cluster's builtin registry alive when master0 dies.
# `make demo` shows it end to end; `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
PYTHON ?= python3
HOSTS ?=
CONTROL_PLANE ?=
MASTERS ?= 3
NODES ?= 2
APT_PACKAGES := openssh-server openssh-client docker-registry rsync curl iproute2 nftables \
                skopeo umoci shellcheck ca-certificates procps util-linux openssl containerd sudo \
                docker.io haproxy postgresql

.PHONY: help setup deps lab-deps toolchain toolchain-containerd2 haproxy-bundle lint test test-unit test-crypto-next test-lab test-lab-early test-lab-toolchain test-e2e lab-up lab-down demo bench

help:
	@echo "make demo       lab up, deploy, kill master0, recover with the CLI, status (KEEP=1 keeps the lab)"
	@echo "make bench      benchmarks in a second lab instance -> .bench/results.json (not part of make test)"
	@echo "make deps       pip install the pinned Python packages"
	@echo "make setup      apt-get update, then make lab-deps (a fresh machine)"
	@echo "make lab-deps   apt + pip: everything the lab and the tests need (root)"
	@echo "make toolchain  build (or reuse) the Pulumi engine, plugins, kube-apiserver and the lab S3 server"
	@echo "make toolchain-containerd2  build (or reuse) containerd 2.x for the lab's 2.x node tests"
	@echo "                (opt-in, not part of make test: about 3.5 min cold)"
	@echo "make haproxy-bundle  HAProxy from Debian's package with its libraries, for nodes without"
	@echo "                haproxy (node_entry) -> .cache/haproxy-bundle/ (reused when there)"
	@echo "make test       unit, lab and end-to-end tests (root; builds the toolchain if missing)"
	@echo "make lab-up     bring up the lab (MASTERS=3 NODES=2, or HOSTS=N; CONTROL_PLANE=1: etcd +"
	@echo "                kube-apiserver on every master); make lab-down removes it"

deps:
	$(PYTHON) -m pip install -q -r requirements.txt

lab-deps: deps
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null

# A fresh machine: package lists first (apt-get install finds nothing before them), then every
# package the lab and the tests need.
setup:
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$(MAKE) lab-deps

# The engine toolchain (build.sh) and the lab's S3 server (gotool.sh versitygw), each cached.
toolchain:
	$(PYTHON) -m lab.toolchain
	bash lab/toolchain/gotool.sh versitygw build

# Opt-in: tests/lab/test_containerd2_node.py skips (saying this) when it is not built.
toolchain-containerd2:
	bash lab/toolchain/gotool.sh containerd2 build

# node_entry's HAProxy for nodes without one (apt-get download haproxy; docs/how-it-works.md).
haproxy-bundle:
	$(PYTHON) -m cli haproxy-bundle

lint:
	shellcheck -x $$(git ls-files '*.sh')

test-unit:
	$(PYTHON) -m pytest -q tests/unit

# sealer's registry cert has serial 0, which cryptography deprecates: the brought-certificate tests
# again under the next majors (a venv over the system packages, only cryptography replaced).
CRYPTO_NEXT ?= 49.0.0 50.0.2
test-crypto-next:
	set -e; for v in $(CRYPTO_NEXT); do \
	  venv=.cache/venv-cryptography-$$v; \
	  [ -x $$venv/bin/python ] || $(PYTHON) -m venv --system-site-packages $$venv; \
	  $$venv/bin/python -m pip install -q cryptography==$$v; \
	  $$venv/bin/python -c "import cryptography; assert cryptography.__version__ == '$$v'"; \
	  $$venv/bin/python -m pytest -q -p no:cacheprovider \
	    -W error::cryptography.utils.CryptographyDeprecationWarning tests/unit/test_certs_serial0.py \
	    tests/unit/test_cli_adopt_sealer.py tests/unit/test_config_adopted.py; \
	done

# The lab tests that need no engine toolchain, then those that do (marker `toolchain`): make test
# runs the first before `toolchain`, so that a cold machine's CI (.ci/run builds it in the
# background from the start) runs them while the Go builds take their 20 minutes.
test-lab-early:
	$(PYTHON) -m pytest -q --durations=15 -m "lab and not toolchain" tests/lab

test-lab-toolchain: toolchain
	$(PYTHON) -m pytest -q --durations=15 -m "lab and toolchain" tests/lab

test-lab: test-lab-early test-lab-toolchain

# node_entry's default (haproxy: auto) ships the bundle: the e2e stacks with node_entry need it.
test-e2e: toolchain haproxy-bundle
	$(PYTHON) -m pytest -q --durations=20 -m e2e tests/e2e

test: lint test-unit test-crypto-next test-lab-early toolchain test-lab-toolchain test-e2e

lab-up:
	$(PYTHON) -m lab up $(if $(HOSTS),--hosts $(HOSTS),--masters $(MASTERS) --nodes $(NODES)) $(if $(filter 1,$(CONTROL_PLANE)),--control-plane)

lab-down:
	$(PYTHON) -m lab down

# The entry and entrywatch phases deploy node_entry (haproxy: auto ships the bundle).
bench: toolchain haproxy-bundle
	$(PYTHON) -m bench

demo: setup
	$(PYTHON) -m lab.demo $(if $(filter 1,$(KEEP)),--keep)
