# libFuzzer targets (docs/fuzzing.md). Included by the Makefile, whose
# variables (BUILD, WARNINGS, DOVECOT_INCLUDE, LIBDOVECOT*, the *_CORE
# source lists) this uses.
#
#   make fuzz             each target for FUZZ_SECONDS (default 60)
#   make fuzz-ci          each target for FUZZ_CI_SECONDS (default 15)
#   make fuzz-regress     replays tests/fuzz/regressions and the seeds
#   make fuzz-build       only builds build/fuzz/fuzz-*
#
# The fuzzers are built with clang into build/fuzz/, apart from the gcc
# objects in build/obj. The working corpus grows in
# build/fuzz/corpus-<target>, seeded from tests/fuzz/corpus/<target>;
# a crash input lands in build/fuzz/crashes/.

FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_CI_SECONDS ?= 15
FUZZ_RUN_SECONDS ?= $(FUZZ_SECONDS)
# per input: longer is a hang, reported like a crash (generous, so that a
# loaded machine doesn't cry wolf)
FUZZ_TIMEOUT ?= 25
# extra libFuzzer options, e.g. FUZZ_ARGS=-jobs=2
FUZZ_ARGS ?=
FUZZ_DEB_PACKAGES = clang libclang-rt-14-dev dovecot-core dovecot-dev make

# UBSan prints no stack by default. fuzz-access-rules writes rules files
# to compile them into FUZZ_TMPDIR: a directory per run, on tmpfs when
# there is one, removed afterwards even if the target crashed.
FUZZ_ENV = UBSAN_OPTIONS=print_stacktrace=1 FUZZ_TMPDIR=$$fuzz_tmp
FUZZ_MKTEMP = fuzz_tmp=$$(mktemp -d /dev/shm/fuzz.XXXXXX 2>/dev/null || mktemp -d)

FUZZ_DIR = $(BUILD)/fuzz
FUZZ_OBJ = $(FUZZ_DIR)/obj
FUZZ_TARGETS = access-rules fts-tokens partmap pop3-state
FUZZ_BINS = $(patsubst %,$(FUZZ_DIR)/fuzz-%,$(FUZZ_TARGETS))

# -O1 and frame pointers for usable stacks; every sanitizer report
# stops the run, so that it counts as a crash.
FUZZ_CFLAGS = -std=gnu99 $(WARNINGS) -DHAVE_CONFIG_H $(DOVECOT_INCLUDE) \
	-Iinclude -Itests/fuzz -g -O1 -fno-omit-frame-pointer \
	-fsanitize=fuzzer-no-link,address,undefined \
	-fno-sanitize-recover=all \
	$(FUZZ_CLANG_WARNINGS)
# Dovecot's HASH_TABLE_DEFINE_TYPE() adds a const to a "const char *" key
# type, which clang (unlike gcc) warns about in access-rules-index.c
FUZZ_CLANG_WARNINGS = -Wno-duplicate-decl-specifier
# the plugins' alloconly pools become separate allocations that
# AddressSanitizer can see (tests/fuzz/fuzz-common.c)
FUZZ_LDFLAGS = -fsanitize=fuzzer,address,undefined \
	-Wl,--wrap=pool_alloconly_create \
	-Wl,--wrap=pool_alloconly_create_clean

fuzz_objs = $(patsubst %.c,$(FUZZ_OBJ)/%.o,$(1))

$(FUZZ_OBJ)/%.o: %.c $(wildcard plugins/*/*.h include/*.h tests/fuzz/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

FUZZ_COMMON = tests/fuzz/fuzz-common.c

$(FUZZ_DIR)/fuzz-access-rules: $(call fuzz_objs,tests/fuzz/fuzz-access-rules.c $(FUZZ_COMMON) $(ACCESS_RULES_CORE))
	$(FUZZ_CC) $(FUZZ_LDFLAGS) -o $@ $^ $(LIBDOVECOT)

$(FUZZ_DIR)/fuzz-fts-tokens: $(call fuzz_objs,tests/fuzz/fuzz-fts-tokens.c $(FUZZ_COMMON) $(FTS_LMDB_CORE))
	$(FUZZ_CC) $(FUZZ_LDFLAGS) -o $@ $^ $(LIBDOVECOT)

# fts-lmdb-istream.c is the slice reader a partial fetch uses: the
# target compares its bytes with a full decoding
$(FUZZ_DIR)/fuzz-partmap: $(call fuzz_objs,tests/fuzz/fuzz-partmap.c $(FUZZ_COMMON) $(FTS_LMDB_CORE) plugins/fts_lmdb/fts-lmdb-istream.c)
	$(FUZZ_CC) $(FUZZ_LDFLAGS) -o $@ $^ $(LIBDOVECOT)

$(FUZZ_DIR)/fuzz-pop3-state: $(call fuzz_objs,tests/fuzz/fuzz-pop3-state.c $(FUZZ_COMMON) $(LEAVE_ON_SERVER_CORE))
	$(FUZZ_CC) $(FUZZ_LDFLAGS) -o $@ $^ $(LIBDOVECOT_STORAGE)

# The findings as unit tests, built like tests/unit (with $(CC)).
FUZZ_REGRESSION_TEST = $(BUILD)/test-fuzz-regressions
$(FUZZ_REGRESSION_TEST): $(call objs,tests/fuzz/regressions/test-fuzz-regressions.c $(ACCESS_RULES_CORE))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBDOVECOT)

.PHONY: fuzz fuzz-ci fuzz-build fuzz-run fuzz-regress fuzz-deps \
	fuzz-deps-if-missing

fuzz-deps:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(FUZZ_DEB_PACKAGES)

fuzz-deps-if-missing:
	@missing=""; for p in $(FUZZ_DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	command -v $(FUZZ_CC) >/dev/null 2>&1 || missing="$$missing $(FUZZ_CC)"; \
	if [ -n "$$missing" ]; then \
		echo "Installing missing packages:$$missing"; \
		$(MAKE) --no-print-directory fuzz-deps; \
	fi

fuzz-build: fuzz-deps-if-missing
	@$(MAKE) --no-print-directory $(FUZZ_BINS)

fuzz: fuzz-build
	@$(MAKE) --no-print-directory fuzz-run FUZZ_RUN_SECONDS=$(FUZZ_SECONDS)

fuzz-ci: fuzz-build
	@$(MAKE) --no-print-directory fuzz-run FUZZ_RUN_SECONDS=$(FUZZ_CI_SECONDS)

# Runs every target even after one fails, so that one run reports every
# crash; fails at the end if any did.
fuzz-run:
	@mkdir -p $(FUZZ_DIR)/crashes; failed=""; $(FUZZ_MKTEMP); \
	for t in $(FUZZ_TARGETS); do \
		corpus=$(FUZZ_DIR)/corpus-$$t; mkdir -p $$corpus; \
		dict=""; [ -f tests/fuzz/$$t.dict ] && dict="-dict=tests/fuzz/$$t.dict"; \
		echo "== fuzz-$$t for $(FUZZ_RUN_SECONDS)s (corpus $$corpus)"; \
		if ! $(FUZZ_ENV) $(FUZZ_DIR)/fuzz-$$t -max_total_time=$(FUZZ_RUN_SECONDS) \
			-timeout=$(FUZZ_TIMEOUT) -max_len=8192 -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_DIR)/crashes/$$t- $$dict $(FUZZ_ARGS) \
			$$corpus tests/fuzz/corpus/$$t \
			>$(FUZZ_DIR)/fuzz-$$t.log 2>&1; then \
			failed="$$failed $$t"; \
			tail -n 60 $(FUZZ_DIR)/fuzz-$$t.log; \
			echo "!! fuzz-$$t failed; log: $(FUZZ_DIR)/fuzz-$$t.log"; \
			grep -o 'Test unit written to .*' $(FUZZ_DIR)/fuzz-$$t.log | \
				sed 's|^Test unit written to |!! crash input: |'; \
			echo "!! reproduce: $(FUZZ_DIR)/fuzz-$$t <crash input>"; \
		else \
			grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+[[:space:]]+DONE)" \
				$(FUZZ_DIR)/fuzz-$$t.log | tr '\n' ' '; echo; \
		fi; \
	done; \
	rm -rf $$fuzz_tmp; \
	if [ -n "$$failed" ]; then echo "fuzzing found crashes in:$$failed"; exit 1; fi

# Each target over its regression inputs and its seeds, once each, then
# the findings as unit tests.
fuzz-regress: fuzz-build
	@$(MAKE) --no-print-directory $(FUZZ_REGRESSION_TEST)
	@failed=""; $(FUZZ_MKTEMP); for t in $(FUZZ_TARGETS); do \
		log=$(FUZZ_DIR)/regress-$$t.log; : >$$log; \
		seeds=$$(find tests/fuzz/corpus/$$t -type f 2>/dev/null | sort); \
		regressions=$$(find tests/fuzz/regressions/$$t -type f 2>/dev/null | sort); \
		echo "== fuzz-$$t: $$(echo $$seeds | wc -w) seeds, $$(echo $$regressions | wc -w) regression inputs"; \
		for f in $$seeds $$regressions; do \
			if ! $(FUZZ_ENV) $(FUZZ_DIR)/fuzz-$$t $$f >>$$log 2>&1; then \
				echo "!! fuzz-$$t fails on $$(grep -o 'Running: .*' $$log | tail -n 1 | cut -d' ' -f2):"; \
				grep -E "^(FUZZ ASSERTION|Panic|.*runtime error|==[0-9]+==ERROR)" $$log | tail -n 1; \
				failed="$$failed fuzz-$$t"; \
			fi; \
		done; \
	done; \
	rm -rf $$fuzz_tmp; \
	echo "== $(FUZZ_REGRESSION_TEST)"; \
	./$(FUZZ_REGRESSION_TEST) || failed="$$failed test-fuzz-regressions"; \
	if [ -n "$$failed" ]; then \
		echo "regressions failed in:$$failed (logs: $(FUZZ_DIR)/regress-*.log)"; \
		exit 1; \
	fi

