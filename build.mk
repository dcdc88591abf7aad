# The build proper, driven by the top-level Makefile after deps are in place.
# Each component adds itself through a small <component>/<component>.mk that
# calls the macros below; nothing else needs to change to add a daemon.

BUILD   ?= build
PREFIX  ?= /usr/local
DESTDIR ?=
PYTHON  ?= /usr/bin/python3
CC      ?= cc
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 10

PKGS       := libevent libevent_pthreads libevent_openssl openssl zlib sqlite3 libmariadb
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS)) -lm

OPT      ?= -O2
# -Wno-missing-field-initializers: settings tables (struct cfg_setting) are
# written positionally; a field added at the end (.secret) is zero where a
# table does not name it, as C guarantees.
CFLAGS   := -std=gnu11 $(OPT) -g -Wall -Wextra -Wno-missing-field-initializers -Werror -D_GNU_SOURCE -pthread -I. $(PKG_CFLAGS) $(EXTRA_CFLAGS)
# --as-needed: a binary records only the shared libraries it really calls
# (memcached does not load libmariadb because libcore can talk to MySQL).
LDFLAGS  := -pthread -Wl,--as-needed $(EXTRA_LDFLAGS)
ifdef SANITIZE
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
LIBS     := $(PKG_LIBS)

FUZZ_CFLAGS := -std=gnu11 -O1 -g -D_GNU_SOURCE -I. -fsanitize=fuzzer,address,undefined $(PKG_CFLAGS)

OBJ = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
PIC = $(patsubst %.c,$(BUILD)/pic/%.o,$(1))

BINS       :=
LIBRARIES  :=
UNIT_BINS  :=
FUZZ_BINS  :=
BENCHES    :=
HEADERS    :=
PCFILES    :=

LIBCORE     := $(BUILD)/lib/libcore.a
COMMON_SRCS := $(sort $(wildcard common/*.c))

# $(call program,NAME,SOURCES,EXTRA_LIBS) -> $(BUILD)/bin/NAME
define program
BINS += $(BUILD)/bin/$(1)
$(BUILD)/bin/$(1): $(call OBJ,$(2)) $(LIBCORE) $(4)
	@mkdir -p $$(@D)
	$$(CC) $$(LDFLAGS) -o $$@ $(call OBJ,$(2)) $(4) $(LIBCORE) $(3) $$(LIBS)
endef

# Every client library is built on the blocking client kit (common/client.c
# and what it uses); a library's version script keeps the kit's symbols
# out of its .so's interface.
CLIENT_KIT := common/client.c common/clock.c common/num.c

# $(call library,NAME,SOURCES,EXTRA_LIBS) -> $(BUILD)/lib/libNAME.a and a
# versioned shared library: libNAME.so.$(SO_VERSION) with soname
# libNAME.so.$(SO_MAJOR), plus the libNAME.so.$(SO_MAJOR) and libNAME.so links.
# Bump SO_MAJOR when a library's interface (its .map) breaks compatibility.
SO_VERSION ?= 1.0.0
SO_MAJOR   := $(firstword $(subst ., ,$(SO_VERSION)))
define library
LIBRARIES += $(BUILD)/lib/lib$(1).a $(BUILD)/lib/lib$(1).so.$(SO_VERSION) $(BUILD)/lib/lib$(1).so.$(SO_MAJOR) $(BUILD)/lib/lib$(1).so
$(BUILD)/lib/lib$(1).a: $(call PIC,$(sort $(2) $(CLIENT_KIT)))
	@mkdir -p $$(@D)
	ar rcs $$@ $$^
$(BUILD)/lib/lib$(1).so.$(SO_VERSION): $(call PIC,$(sort $(2) $(CLIENT_KIT)))
	@mkdir -p $$(@D)
	$$(CC) $$(LDFLAGS) -shared -Wl,-soname,lib$(1).so.$(SO_MAJOR) -o $$@ $$^ $(3)
$(BUILD)/lib/lib$(1).so.$(SO_MAJOR) $(BUILD)/lib/lib$(1).so: $(BUILD)/lib/lib$(1).so.$(SO_VERSION)
	ln -sfn $$(<F) $$@
endef

# $(call unit_test,PATH_UNDER_tests/unit_WITHOUT_.c,EXTRA_SOURCES,EXTRA_LIBS)
define unit_test
UNIT_BINS += $(BUILD)/tests/unit/$(1)
$(BUILD)/tests/unit/$(1): $(call OBJ,tests/unit/$(1).c $(2)) $(LIBCORE)
	@mkdir -p $$(@D)
	$$(CC) $$(LDFLAGS) -o $$@ $(call OBJ,tests/unit/$(1).c $(2)) $(LIBCORE) $(3) $$(LIBS)
endef

# $(call fuzz_target,NAME,SOURCES) -> $(BUILD)/fuzz/NAME, seeds from tests/fuzz/corpus/NAME
# A target is rebuilt when any header its sources include changes (the
# dependency list is written next to it after each build).
# The core's leaf modules (strict numbers, clock, log) come with every target.
FUZZ_BASE := common/num.c common/clock.c common/log.c
define fuzz_target
FUZZ_BINS += $(BUILD)/fuzz/$(1)
$(BUILD)/fuzz/$(1): $(sort $(2) $(FUZZ_BASE)) $$(if $$(wildcard $(BUILD)/fuzz/$(1).d),,FORCE)
	@mkdir -p $$(@D)
	$$(FUZZ_CC) $$(FUZZ_CFLAGS) -o $$@ $(sort $(2) $(FUZZ_BASE)) $(3) $$(PKG_LIBS)
	@{ $$(FUZZ_CC) $$(FUZZ_CFLAGS) -MM -MP -MT $$@ $(sort $(2) $(FUZZ_BASE)); printf '%s:\n' $(sort $(2) $(FUZZ_BASE)); } > $$@.d
endef

include $(sort $(wildcard */*.mk))

.PHONY: build unit integration fuzz-build fuzz-run bench install FORCE
FORCE:
build: $(BINS) $(LIBRARIES) $(UNIT_BINS) $(PCFILES)

$(LIBCORE): $(call OBJ,$(COMMON_SRCS))
	@mkdir -p $(@D)
	ar rcs $@ $^

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/pic/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -fPIC -MMD -MP -c $< -o $@

unit: $(UNIT_BINS)
	@bash tests/run_unit.sh $(UNIT_BINS)

# Test files run on every core (pytest-xdist); each test starts its own
# daemons on free ports, so they don't interfere. TEST_JOBS=1 runs serially.
TEST_JOBS ?= $(shell nproc)
integration: build
	@BUILD_DIR=$(abspath $(BUILD)) $(PYTHON) -m pytest -q -p no:cacheprovider $(if $(filter-out 1,$(TEST_JOBS)),-n $(TEST_JOBS)) tests/integration $(PYTEST_ARGS)

fuzz-build: $(FUZZ_BINS)

fuzz-run: $(FUZZ_BINS)
	@FUZZ_JOBS=$(TEST_JOBS) bash tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_BINS)

bench: build
	@set -e; for b in $(BENCHES); do echo "== $$b"; BUILD_DIR=$(abspath $(BUILD)) $(PYTHON) $$b; done

# Units and sample configs name their paths as @PREFIX@ and @SYSCONFDIR@;
# pkg-config files get LIBDIR (multiarch: LIBDIR=/usr/lib/<triplet>).
# Man pages are installed when `make -f build.mk man` made them (needs help2man).
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
LIBDIR     ?= $(PREFIX)/lib
MANDIR     ?= $(PREFIX)/share/man
SAMPLE_CONFS := $(filter-out %-run.conf,$(wildcard deploy/conf/*.conf))
UNITS        := $(wildcard deploy/systemd/*.service)
SUBST        := sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|^libdir=.*|libdir=$(LIBDIR)|'

# Nothing is overwritten that this tree did not install (deploy/install-file.sh
# keeps a manifest; FORCE=1 overrides), except sample configs, which are
# only ever added. The versioned libraries' .so.1 and .so links stay links.
INSTALL_FILE := PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) bash deploy/install-file.sh
# one staging directory per destination: installs into different DESTDIRs
# (tests under pytest-xdist) may run at once
STAGE        := $(BUILD)/install-stage-$(firstword $(shell printf '%s' '$(DESTDIR)$(PREFIX)' | cksum))

install: build
	@set -e; rm -rf $(STAGE); mkdir -p $(STAGE) $(DESTDIR)$(SYSCONFDIR)/stack; \
	for f in $(BINS); do $(INSTALL_FILE) 755 $$f $(PREFIX)/bin/$$(basename $$f); done; \
	for f in $(LIBRARIES); do $(INSTALL_FILE) 644 $$f $(LIBDIR)/$$(basename $$f); done; \
	for f in $(HEADERS); do $(INSTALL_FILE) 644 $$f $(PREFIX)/include/$$(basename $$f); done; \
	for f in $(PCFILES); do $(SUBST) $$f >$(STAGE)/$$(basename $$f); \
	  $(INSTALL_FILE) 644 $(STAGE)/$$(basename $$f) $(LIBDIR)/pkgconfig/$$(basename $$f); done; \
	for f in $(UNITS); do $(SUBST) $$f >$(STAGE)/$$(basename $$f); \
	  $(INSTALL_FILE) 644 $(STAGE)/$$(basename $$f) $(PREFIX)/lib/systemd/system/$$(basename $$f); done; \
	for d in $(sort $(dir $(wildcard */README.md))); do \
	  $(INSTALL_FILE) 644 $${d}README.md $(PREFIX)/share/doc/stack/$${d}README.md; done; \
	for m in $(wildcard $(BUILD)/man/*.[1-8]); do \
	  $(INSTALL_FILE) 644 $$m $(MANDIR)/man$${m##*.}/$$(basename $$m); done; \
	for f in $(SAMPLE_CONFS); do t=$(DESTDIR)$(SYSCONFDIR)/stack/$$(basename $$f); \
	  if [ -e $$t ]; then echo "keeping existing $$t"; else $(SUBST) $$f >$$t; fi; done; \
	rm -rf $(STAGE)

-include $(shell find $(BUILD)/obj $(BUILD)/pic $(BUILD)/fuzz -name '*.d' 2>/dev/null)
