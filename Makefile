# Thin wrapper over CMake. The README's two commands are `make run` and
# `make test`; both install missing Debian packages first.
JOBS ?= $(shell nproc)
BUILD ?= build
TEST_BUILD ?= build-test
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
PYTHON ?= /usr/bin/python3
ifeq ($(CI),true)
  CMAKE_EXTRA += -DWEIR_WERROR=ON
endif

.PHONY: all deps run test unit ui ui-check integration fuzz-replay tsan fuzz bench format lint clean

all:
	@scripts/install-deps build
	@scripts/build-ui
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_EXTRA) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

run: all
	$(abspath $(BUILD))/bin/weir

# The test build: ASan + UBSan, pools off so the sanitizers see every object.
$(TEST_BUILD)/.built: FORCE
	@scripts/install-deps build test
	cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DWEIR_SANITIZE=ON \
	      -DWEIR_TESTS=ON -DWEIR_DEBUG_NOPOOL=ON $(CMAKE_EXTRA) >/dev/null
	cmake --build $(TEST_BUILD) -j $(JOBS)
	@touch $@
FORCE:

# The release build is part of the test: optimized builds warn about
# things -O0 does not, and `make run` must build.
test: $(TEST_BUILD)/.built
	$(MAKE) --no-print-directory all
	$(MAKE) --no-print-directory lint unit ui-check fuzz-replay integration tsan

# The include layers (scripts/check-layers), every tracked C file
# clang-format clean, and clang-tidy's bug finders
# (.clang-tidy) clean over src/, with the test build's compile commands.
lint: $(TEST_BUILD)/.built
	scripts/check-layers
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')
	git ls-files 'src/*.c' | xargs -P $(JOBS) -n 4 clang-tidy -p $(TEST_BUILD) --quiet

# The web UI's front end (ui/): rebuilt into ui/dist when its sources
# changed (the binary embeds ui/dist); checked by make test: types, the
# Vitest unit tests, and ui/dist being what the sources build. The browser
# tests are tests/integration/test_ui.py.
ui:
	scripts/build-ui

ui-check:
	scripts/build-ui check

unit:
	ASAN_OPTIONS=detect_leaks=1 $(abspath $(TEST_BUILD))/bin/unit_tests --jobs 2
	ASAN_OPTIONS=detect_leaks=1 $(abspath $(TEST_BUILD))/bin/pool_tests --jobs 2

fuzz-replay:
	@for t in $(abspath $(TEST_BUILD))/bin/*_fuzz; do \
	    name=$$(basename $$t); \
	    echo "replaying fuzz/corpus/$${name%_fuzz}"; \
	    $$t fuzz/corpus/$${name%_fuzz}/* || exit 1; \
	done

# The integration tests wait on peers more than they compute: several at
# once (pytest-xdist; each worker hands out ports from its own range)
# keep both cores busy. TEST_WORKERS=0 runs them one by one.
TEST_WORKERS ?= 3
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS))

integration:
	WEIR_BUILD=$(abspath $(TEST_BUILD)) $(PYTHON) -m pytest -q $(XDIST) tests/integration $(PYTEST_ARGS)

# ThreadSanitizer over the multi-threaded paths (shared upstream pool,
# load balancer, health checker, shutdown, TLS contexts and sessions shared
# by the workers, HTTP/2, per-backend connection limits and their queues,
# failover under load, UDP sessions, RESP rings): the weir binaries built with
# TSan, driven by the integration tests that use several workers.
TSAN_TESTS ?= tests/integration/test_keepalive.py tests/integration/test_concurrency.py \
              tests/integration/test_lb.py tests/integration/test_shutdown.py \
              tests/integration/test_api.py tests/integration/test_reload.py \
              tests/integration/test_subrequest.py tests/integration/test_forward_auth.py \
              tests/integration/test_jwt.py \
              tests/integration/test_admin.py tests/integration/test_metrics.py \
              tests/integration/test_tls.py tests/integration/test_h2.py \
              tests/integration/test_upstream_alpn.py tests/integration/test_grpc.py \
              tests/integration/test_h2_reload.py tests/integration/test_backend_limits.py \
              tests/integration/test_failover.py tests/integration/test_generated.py \
              tests/integration/test_compression.py tests/integration/test_cache.py \
              tests/integration/test_cache_disk.py tests/integration/test_aging.py \
              tests/integration/test_aging_h2.py tests/integration/test_discovery.py \
              tests/integration/test_l4_udp.py tests/integration/test_ring.py \
              tests/integration/test_router.py tests/integration/test_etcd.py \
              tests/integration/test_acme.py tests/integration/test_webhook.py \
              tests/integration/test_ocsp.py tests/integration/test_otel.py
tsan:
	@scripts/install-deps build test
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS=-fsanitize=thread \
	      -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread $(CMAKE_EXTRA) >/dev/null
	cmake --build $(TSAN_BUILD) -j $(JOBS) --target weir weir-lb-app weir-test-app round_robin
	WEIR_BUILD=$(abspath $(TSAN_BUILD)) TSAN_OPTIONS=halt_on_error=0 \
	    $(PYTHON) -m pytest -q $(XDIST) $(TSAN_TESTS) $(PYTEST_ARGS)

# libFuzzer builds with clang: build-fuzz/bin/<parser>_fuzz.
fuzz:
	@scripts/install-deps build fuzz
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DWEIR_FUZZ=ON \
	      -DWEIR_SANITIZE=ON >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS)

bench: all
	bench/run

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(TEST_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
