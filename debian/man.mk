# `make -f build.mk man`: a man page for every program in debian/programs
# that answers --help, into $(BUILD)/man/ (needs help2man; not part of the
# default build). `make install` installs whatever pages are there.
.PHONY: man
man: $(BINS)
	@mkdir -p $(BUILD)/man
	@set -e; grep -v '^#' debian/programs | while read -r bin pkg name sec desc; do \
	  [ -x $(BUILD)/bin/$$bin ] || continue; \
	  SYSCONFDIR=$(SYSCONFDIR) UNITDIR=$(PREFIX)/lib/systemd/system sh debian/manpage.sh $(BUILD)/bin/$$bin $$bin $$sec "$$desc" $(BUILD)/man/$$bin.$$sec || [ $$? = 3 ]; \
	done
