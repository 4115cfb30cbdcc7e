# Dovecot plugins: access_rules, leave_on_server (more to come). See README.md.
#
# Everything Dovecot-specific comes from its dovecot-config, so that the
# same Makefile builds against a Dovecot installed elsewhere:
#   make DOVECOT_CONFIG=/opt/dovecot/lib/dovecot/dovecot-config

DOVECOT_CONFIG ?= /usr/lib/dovecot/dovecot-config
CC ?= cc
PYTHON ?= /usr/bin/python3
PYTEST_ARGS ?=

# dovecot-config is a shell fragment; read only the values we need.
dovecot_var = $(shell [ -r $(DOVECOT_CONFIG) ] && . $(DOVECOT_CONFIG) && echo "$$$(1)")
DOVECOT_INCLUDE := $(call dovecot_var,LIBDOVECOT_INCLUDE)
DOVECOT_LIBDIR := $(call dovecot_var,dovecot_pkglibdir)
moduledir ?= $(call dovecot_var,dovecot_moduledir)
bindir ?= /usr/local/bin
DESTDIR ?=

CFLAGS ?= -O2 -g
WARNINGS = -Wall -Wextra -Werror -Wmissing-prototypes -Wmissing-declarations \
	-Wpointer-arith -Wchar-subscripts -Wformat=2 -Wbad-function-cast
# -fvisibility=hidden: see include/plugin-export.h
ALL_CFLAGS = -std=gnu99 $(WARNINGS) -DHAVE_CONFIG_H -fPIC -fvisibility=hidden \
	$(DOVECOT_INCLUDE) -Iinclude $(CFLAGS)
LIBDOVECOT = -L$(DOVECOT_LIBDIR) -Wl,-rpath,$(DOVECOT_LIBDIR) -ldovecot
LIBDOVECOT_STORAGE = -L$(DOVECOT_LIBDIR) -Wl,-rpath,$(DOVECOT_LIBDIR) \
	-ldovecot-storage -ldovecot

BUILD = build

# make test SANITIZE=1: everything built with ASan and UBSan into its own
# directory, and the whole suite run against it. Dovecot's own binaries
# aren't instrumented, so its processes preload the ASan runtime.
ifeq ($(SANITIZE),1)
ALL_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
BUILD = build/asan
SANITIZER_ENV = PLUGIN_BUILD_DIR=$(BUILD) \
	SANITIZER_PRELOAD=$(shell $(CC) -print-file-name=libasan.so) \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# The unit tests are where leaks are checked (see valgrind below).
UNIT_TEST_ENV = ASAN_OPTIONS=detect_leaks=1 $(SANITIZER_ENV)
INTEGRATION_TEST_ENV = ASAN_OPTIONS=detect_leaks=0 $(SANITIZER_ENV)
endif

OBJ = $(BUILD)/obj

# The rules core has no storage dependencies: the plugin, the
# access-rules tool and the unit tests all link it.
ACCESS_RULES_CORE = plugins/access_rules/access-rules-file.c \
	plugins/access_rules/access-rules-index.c \
	plugins/access_rules/access-rules-match.c \
	plugins/access_rules/access-rules-compiled.c
ACCESS_RULES_PLUGIN = plugins/access_rules/access-rules-plugin.c \
	plugins/access_rules/access-rules-settings.c \
	plugins/access_rules/access-rules-user.c \
	plugins/access_rules/access-rules-sessions.c \
	plugins/access_rules/access-rules-storage.c \
	plugins/access_rules/access-rules-imap.c \
	plugins/access_rules/access-rules-pop3.c \
	$(ACCESS_RULES_CORE)
ACCESS_RULES_TOOL = plugins/access_rules/access-rules-tool.c $(ACCESS_RULES_CORE)

# lib20_: loads after quota (lib10_), whose symbols the quota policy uses
LEAVE_ON_SERVER_CORE = plugins/leave_on_server/leave-on-server-settings.c \
	plugins/leave_on_server/leave-on-server-state.c
LEAVE_ON_SERVER_PLUGIN = plugins/leave_on_server/leave-on-server-plugin.c \
	plugins/leave_on_server/leave-on-server-user.c \
	plugins/leave_on_server/leave-on-server-storage.c \
	plugins/leave_on_server/leave-on-server-move.c \
	plugins/leave_on_server/leave-on-server-cleanup.c \
	plugins/leave_on_server/leave-on-server-quota.c \
	plugins/leave_on_server/leave-on-server-capa.c \
	plugins/leave_on_server/leave-on-server-pop3.c \
	$(LEAVE_ON_SERVER_CORE)
LEAVE_ON_SERVER_TOOL = plugins/leave_on_server/leave-on-server-tool.c \
	$(LEAVE_ON_SERVER_CORE)

# lib21_: loads after the fts plugin (lib20_), whose backend API it uses
FTS_LMDB_CORE = plugins/fts_lmdb/fts-lmdb-tokens.c \
	plugins/fts_lmdb/fts-lmdb-postings.c \
	plugins/fts_lmdb/fts-lmdb-partmap.c \
	plugins/fts_lmdb/fts-lmdb-checksum.c \
	plugins/fts_lmdb/fts-lmdb-find.c \
	plugins/fts_lmdb/fts-lmdb-block-value.c \
	plugins/fts_lmdb/fts-lmdb-grams-page.c
FTS_LMDB_PLUGIN = plugins/fts_lmdb/fts-lmdb-plugin.c \
	plugins/fts_lmdb/fts-lmdb-user.c \
	plugins/fts_lmdb/fts-lmdb-settings.c \
	plugins/fts_lmdb/fts-lmdb-backend.c \
	plugins/fts_lmdb/fts-lmdb-update.c \
	plugins/fts_lmdb/fts-lmdb-extract.c \
	plugins/fts_lmdb/fts-lmdb-lookup.c \
	plugins/fts_lmdb/fts-lmdb-search.c \
	plugins/fts_lmdb/fts-lmdb-blocks.c \
	plugins/fts_lmdb/fts-lmdb-grams.c \
	plugins/fts_lmdb/fts-lmdb-guids.c \
	plugins/fts_lmdb/fts-lmdb-db.c \
	plugins/fts_lmdb/fts-lmdb-partmap-build.c \
	plugins/fts_lmdb/fts-lmdb-istream.c \
	plugins/fts_lmdb/fts-lmdb-mail.c \
	plugins/fts_lmdb/fts-lmdb-imap.c \
	$(FTS_LMDB_CORE)
LIBLMDB = -llmdb

PLUGINS = $(BUILD)/lib10_access_rules_plugin.so \
	$(BUILD)/lib20_leave_on_server_plugin.so \
	$(BUILD)/lib21_fts_lmdb_plugin.so
TOOLS = $(BUILD)/access-rules $(BUILD)/leave-on-server
UNIT_TESTS = $(BUILD)/test-access-rules $(BUILD)/test-leave-on-server \
	$(BUILD)/test-fts-lmdb
BENCHES = $(BUILD)/bench-access-rules $(BUILD)/bench-noop/lib10_bench_noop_plugin.so

objs = $(patsubst %.c,$(OBJ)/%.o,$(1))

# Debian 12 packages the build, the tests and the demo need.
DEB_PACKAGES = dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd \
	dovecot-dev liblmdb-dev libssl-dev python3-pytest curl openssl \
	make gcc fetchmail getmail6 valgrind strace lmdb-utils \
	dovecot-lucene dovecot-fts-xapian

.PHONY: all install test unit-test integration-test valgrind bench demo clean \
	deps deps-if-missing

all: deps-if-missing
	@$(MAKE) --no-print-directory build-all

.PHONY: build-all
build-all: $(PLUGINS) $(TOOLS)

$(OBJ)/%.o: %.c $(wildcard plugins/*/*.h include/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/lib10_access_rules_plugin.so: $(call objs,$(ACCESS_RULES_PLUGIN))
	$(CC) -shared $(LDFLAGS) -o $@ $^

$(BUILD)/lib20_leave_on_server_plugin.so: $(call objs,$(LEAVE_ON_SERVER_PLUGIN))
	$(CC) -shared $(LDFLAGS) -o $@ $^

$(BUILD)/lib21_fts_lmdb_plugin.so: $(call objs,$(FTS_LMDB_PLUGIN))
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(LIBLMDB)

$(BUILD)/leave-on-server: $(call objs,$(LEAVE_ON_SERVER_TOOL))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBDOVECOT_STORAGE)

$(BUILD)/access-rules: $(call objs,$(ACCESS_RULES_TOOL))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBDOVECOT)

$(BUILD)/test-access-rules: $(call objs,tests/unit/test-access-rules.c $(ACCESS_RULES_CORE))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBDOVECOT)

$(BUILD)/test-leave-on-server: $(call objs,tests/unit/test-leave-on-server.c $(LEAVE_ON_SERVER_CORE))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBDOVECOT_STORAGE)

$(BUILD)/test-fts-lmdb: $(call objs,tests/unit/test-fts-lmdb.c $(FTS_LMDB_CORE))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBDOVECOT)

$(BUILD)/bench-access-rules: $(call objs,bench/bench-access-rules.c $(ACCESS_RULES_CORE))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBDOVECOT)

# its own directory: the instances of the other sides must not see it
$(BUILD)/bench-noop/lib10_bench_noop_plugin.so: $(call objs,bench/noop-plugin.c)
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDFLAGS) -o $@ $^

install: all
	install -d $(DESTDIR)$(moduledir) $(DESTDIR)$(bindir)
	install -m 0644 $(PLUGINS) $(DESTDIR)$(moduledir)/
	install -m 0755 $(TOOLS) $(DESTDIR)$(bindir)/

# Installs what is missing (needs root and Debian's package archive).
deps:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(DEB_PACKAGES)
	@# the test corpus comes from the npm registry; Debian's npm only if
	@# the machine's Node.js brought none
	command -v npm >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y npm

deps-if-missing:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
		echo "Installing missing packages:$$missing"; \
		$(MAKE) --no-print-directory deps; \
	fi

test: all
	@$(MAKE) --no-print-directory $(UNIT_TESTS)
	@$(MAKE) --no-print-directory unit-test integration-test

unit-test: $(UNIT_TESTS)
	@for t in $(UNIT_TESTS); do echo "== $$t"; $(UNIT_TEST_ENV) ./$$t || exit 1; done

integration-test:
	$(INTEGRATION_TEST_ENV) $(PYTHON) -m pytest -q $(PYTEST_ARGS) tests/integration

# The unit tests under valgrind: no leak and no invalid access, except
# what tests/valgrind.supp excuses in Dovecot's own library.
VALGRIND = valgrind --quiet --error-exitcode=1 --leak-check=full \
	--show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
	--suppressions=tests/valgrind.supp
valgrind: all
	@$(MAKE) --no-print-directory $(UNIT_TESTS)
	@for t in $(UNIT_TESTS); do echo "== valgrind $$t"; $(VALGRIND) ./$$t || exit 1; done

bench: all
	@$(MAKE) --no-print-directory $(BENCHES)
	$(PYTHON) bench/run.py

demo: all
	$(PYTHON) tests/demo.py

clean:
	rm -rf $(BUILD)
include tests/fuzz/fuzz.mk
include tests/soak/soak.mk
