# The one entry point. Public targets first install what is missing
# (deploy/deps.sh, a fast no-op when all is there), then run the real work in
# a sub-make so pkg-config sees the installed libraries.
#
#   make            build everything into build/
#   make test       unit tests, integration tests (pytest), short fuzz runs
#   make asan       the whole suite under ASan+UBSan (build-asan/)
#   make fuzz       every libFuzzer target for FUZZ_SECONDS each
#   make bench      side-by-side benchmarks against the real peers
#   make run        the built daemons on localhost until Ctrl-C
#   make install    PREFIX=/usr/local DESTDIR=
#   make clean
#   make help       this list

BUILD        ?= build
PREFIX       ?= /usr/local
DESTDIR      ?=
FUZZ_SECONDS ?= 60
# short fuzz run per target inside `make test`
TEST_FUZZ_SECONDS ?= 10
PYTHON       ?= /usr/bin/python3
PYTEST_ARGS  ?=
DEPS         ?= deploy/deps.sh

export BUILD PYTHON

# The build and the fuzz targets compile on every core unless make was given
# its own -j.
PAR := $(if $(findstring j,$(firstword $(filter-out --%,$(MAKEFLAGS)))),,-j$(shell nproc))

.PHONY: all test asan fuzz bench run install clean deps test-deps unit integration help
.DEFAULT_GOAL := all

# `make` and `make run` install only what the build needs; the test, fuzz
# and bench targets also install the test drivers and the real peers.
deps:
	@bash $(DEPS) build

test-deps:
	@bash $(DEPS) test

all: deps
	@$(MAKE) --no-print-directory -f build.mk $(PAR) build

test: test-deps
	@$(MAKE) --no-print-directory -f build.mk $(PAR) build
	@$(MAKE) --no-print-directory -f build.mk unit
	@$(MAKE) --no-print-directory -f build.mk integration PYTEST_ARGS="$(PYTEST_ARGS)"
	@$(MAKE) --no-print-directory -f build.mk $(PAR) fuzz-build
	@$(MAKE) --no-print-directory -f build.mk fuzz-run FUZZ_SECONDS=$(TEST_FUZZ_SECONDS)

unit integration: test-deps
	@$(MAKE) --no-print-directory -f build.mk $(PAR) build
	@$(MAKE) --no-print-directory -f build.mk $@ PYTEST_ARGS="$(PYTEST_ARGS)"

asan: test-deps
	@$(MAKE) --no-print-directory -f build.mk BUILD=build-asan SANITIZE=1 $(PAR) build
	@$(MAKE) --no-print-directory -f build.mk BUILD=build-asan SANITIZE=1 unit
	@$(MAKE) --no-print-directory -f build.mk BUILD=build-asan SANITIZE=1 integration PYTEST_ARGS="$(PYTEST_ARGS)"

fuzz: test-deps
	@$(MAKE) --no-print-directory -f build.mk $(PAR) fuzz-build
	@$(MAKE) --no-print-directory -f build.mk fuzz-run FUZZ_SECONDS=$(FUZZ_SECONDS)

bench: test-deps
	@$(MAKE) --no-print-directory -f build.mk $(PAR) build
	@$(MAKE) --no-print-directory -f build.mk bench

run: deps
	@$(MAKE) --no-print-directory -f build.mk $(PAR) build
	@bash deploy/run.sh

install: all
	@$(MAKE) --no-print-directory -f build.mk install PREFIX=$(PREFIX) DESTDIR=$(DESTDIR)

clean:
	rm -rf build build-asan

help:
	@echo "make            build everything into build/ (installs only the build dependencies)"
	@echo "make test       unit tests, integration tests (pytest), short fuzz runs"
	@echo "make unit       C unit tests only"
	@echo "make integration  integration tests only (PYTEST_ARGS=... to pick)"
	@echo "make asan       the whole suite under ASan+UBSan (build-asan/)"
	@echo "make fuzz       every libFuzzer target for FUZZ_SECONDS (default $(FUZZ_SECONDS)) each"
	@echo "make bench      side-by-side benchmarks against the real peers"
	@echo "make run        the built daemons on localhost until Ctrl-C"
	@echo "make install    PREFIX=$(PREFIX) DESTDIR=$(DESTDIR): never overwrites a file an earlier make install did not write, keeps existing configs"
	@echo "make clean      remove build/ and build-asan/"
	@echo "make help       this list"
	@echo "make -f build.mk man   man pages from each program's --help into build/man/ (needs help2man; make install installs them)"
	@echo "dpkg-buildpackage -b -us -uc   the Debian packages (stack-<daemon>, libstack1, libstack-dev; see debian/README.Debian)"
