# Everything runs from a fresh clone: `make run` or `make test` (see README.md).
# Tools live in .venv (Python) and .cache/bin (Go-built test peers); nothing
# is installed system-wide.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Rewritten after every successful install, so editing pyproject.toml (a new
# dependency, a new range) reinstalls on the next make.
STAMP := $(VENV)/.stamp

# The test peers are library code for every test, so they are held to
# --strict like the package; test files themselves are not (yet).
MYPY_EXTRA := scripts tests/peers.py tests/conftest.py tests/test_peers.py \
	tests/test_route_warming.py tests/test_bench_parsers.py \
	tests/test_grpc_method_stats.py tests/test_incremental_push.py \
	tests/kube_apiserver.py tests/test_kubernetes_source.py tests/test_backoff.py \
	tests/test_manifests.py tests/test_status_nack.py tests/test_kube_status.py \
	tests/test_grpcroute_translate.py tests/test_grpcroute_resources.py \
	tests/test_grpcroute_end_to_end.py tests/test_httproute_translate.py \
	tests/test_gateway_tls_translate.py tests/test_gateway_end_to_end.py \
	tests/test_tls_client_certificates.py tests/test_grpc_routing_options.py \
	tests/test_grpc_connections.py tests/test_conditions_api.py tests/test_metrics.py \
	tests/test_watch_metrics.py tests/test_gateway_kubernetes.py tests/test_gateway_status.py \
	tests/test_faults.py tests/test_xds_mtls.py tests/mtls.py tests/grpc_load.py \
	tests/control_plane_process.py tests/ingress_harness.py tests/test_supply_chain.py \
	tests/test_hostile_input.py tests/test_translate_properties.py \
	tests/test_endpoint_fast_path.py tests/test_store.py tests/test_pipeline.py tests/test_sds_scope.py \
	tests/test_label_selector.py tests/test_gateway_namespace_selector.py \
	tests/test_file_source_scale.py tests/test_gc_pause.py tests/test_cold_start_path.py \
	tests/test_admin_ack_times.py tests/test_translation_memo.py tests/test_bench_targets.py tests/test_bench_ablation.py tests/envoy_verdicts.py

.PHONY: help venv test-deps test lint protos protos-check run bench clean distclean
.PHONY: deploy manifests-check audit

help:
	@echo "make run          the local ingress: control plane, Envoy, two gRPC backends"
	@echo "make test         protos-check, lint and the whole test suite (as CI runs it)"
	@echo "make lint         ruff check, ruff format --check, mypy"
	@echo "make protos       regenerate Python code from protos/"
	@echo "make protos-check fail if the checked-in generated code is stale"
	@echo "make test-deps    build the test peers pip does not provide (grpcurl, etcd, kube-apiserver) into .cache"
	@echo "make venv         create or update .venv"
	@echo "make bench        run the benchmarks (not part of test)"
	@echo "make audit        pip-audit the installed dependencies for known vulnerabilities"
	@echo "make deploy       install into the current kubectl context (OVERLAY=loadbalancer; see manifests/README.md)"
	@echo "make manifests-check render every manifests/ overlay and validate it against a real API server"
	@echo "make clean        remove caches and build output; distclean also .venv and .cache"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
		echo "creating $(VENV) with $(PYTHON)"; \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

test-deps:
	scripts/install-test-deps.sh

test: venv test-deps
	$(MAKE) protos-check
	$(MAKE) lint
	$(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy $(MYPY_EXTRA)

# Known vulnerabilities in what is installed (PyPI's advisory data, through
# pip-audit): fails on any. CI runs it after the tests (.ci/run).
audit: venv
	$(BIN)/python scripts/audit.py

protos: venv
	$(BIN)/python scripts/gen_protos.py

protos-check: venv
	$(BIN)/python scripts/gen_protos.py --check

# grpcurl is what a newcomer calls the demo with; without Go the demo still
# runs and prints the command to use with any grpcurl.
run: venv
	scripts/install-test-deps.sh grpcurl || echo "make run: no grpcurl built (needs Go); the demo runs anyway"
	PATH="$(CURDIR)/.cache/bin:$$PATH" $(BIN)/xds-ingress demo

# Benchmarks measure; they never gate `make test`. `make bench BENCH_ARGS=--quick`
# is a short smoke run (see bench/README.md). Without Go, the data-plane
# scenario is skipped and says why. test-deps builds etcd and kube-apiserver,
# which route-propagation, endpoint-change and fan-out run against.
BENCH_ARGS ?=
bench: venv test-deps
	@if [ -f bench/__main__.py ]; then \
		$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'; \
		bench/install-deps.sh || echo "make bench: ghz and the interop server were not built"; \
		$(BIN)/python -m bench $(BENCH_ARGS); \
	else \
		echo "no benchmarks yet (bench/__main__.py is missing)"; \
	fi

# The ingress into whatever cluster kubectl points at. OVERLAY is one of
# manifests/overlays/ (nodeport, loadbalancer, daemonset-hostnetwork).
OVERLAY ?= loadbalancer
deploy:
	kubectl apply -k manifests/overlays/$(OVERLAY)

# Renders each overlay with kustomize and has a real kube-apiserver accept
# every object (server-side dry run); also runs the control plane with
# exactly the rendered RBAC. Part of `make test` too.
manifests-check: venv
	scripts/install-test-deps.sh kustomize kube
	$(BIN)/pytest -q tests/test_manifests.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) .cache
