# tests/fuzz/fuzz.mk - libFuzzer harnesses for hostile input (issue 5.3).
#
# Run from the repository root (the top-level `make fuzz` does it):
#
#   make -f tests/fuzz/fuzz.mk FUZZ_SECONDS=90     regress, then fuzz
#   make -f tests/fuzz/fuzz.mk regress             committed inputs only
#   make -f tests/fuzz/fuzz.mk fuzz                fuzzing only
#   make -f tests/fuzz/fuzz.mk seeds               regenerate bkfmt seeds
#
# Harnesses (one tests/fuzz/fuzz_<h>.c each; the top of each file
# describes its input format and what it checks):
#   stmt    the statement parser of `vdi exec` (core/cli/stmt.c)
#   bkfmt   the backup-format reader (core/cli/bkfmt.c)
#   shm     the engine against a peer that writes its shared memory
#
# For each harness:
#   1. build it with clang -fsanitize=fuzzer,address,undefined into
#      $(FUZZ_BUILD)/ (the code under test is compiled into its own
#      objects there, with the same instrumentation; nothing else is
#      touched);
#   2. regression: run it once over every committed seed
#      (tests/fuzz/corpus/<h>/, one run) and every kept crash
#      (tests/fuzz/regress/<h>/, one run each, so each is reported);
#   3. fuzz it for FUZZ_SECONDS/3 seconds, new corpus entries going to
#      $(FUZZ_BUILD)/corpus/<h>/ (kept between runs) and crashes to
#      $(FUZZ_BUILD)/crashes/.
# Exits non-zero if any harness crashed, broke a checked contract, leaked,
# hung (-timeout) or outgrew -rss_limit_mb, in either mode; every harness
# still runs.  Logs: $(FUZZ_BUILD)/{regress,fuzz}-<h>.log.
#
# A crash: replay with `$(FUZZ_BUILD)/fuzz_<h> <file>` (VDI_FUZZ_VERBOSE=1
# traces every call of fuzz_shm and bkfmt's verdict); once understood,
# keep the file in tests/fuzz/regress/<h>/ with a name that says what it
# found.
#
# Needs clang with the compiler-rt sanitizer and libFuzzer runtimes
# (Debian 12: clang and libclang-rt-14-dev, the latter only recommended
# by clang's dependencies; llvm-14 (or llvm) for llvm-symbolizer, for
# stack traces with file and line).  Installs nothing.
#
#   FUZZ_SECONDS=N     total fuzzing budget (default 30), split evenly
#   FUZZ_HARNESSES=..  subset, e.g. FUZZ_HARNESSES=stmt
#   FUZZ_CC=clang-14   compiler
#   FUZZ_BUILD=dir     build and output directory (default build-fuzz)
#   FUZZ_ARGS=...      extra libFuzzer flags for the fuzzing runs

FUZZ_SECONDS ?= 30
FUZZ_CC ?= clang
FUZZ_BUILD ?= build-fuzz
FUZZ_HARNESSES ?= stmt bkfmt shm
FUZZ_RSS_MB ?= 2048
FUZZ_TIMEOUT ?= 10
FUZZ_ARGS ?=

FB := $(FUZZ_BUILD)
SAN := -fsanitize=address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -pthread -g -O1 $(SAN) \
	-Wall -Wextra -Icore -Icore/cli
LIB_CFLAGS := $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link
# The harnesses follow the project's strict warnings (see the Makefile).
HARNESS_WARN := -Wstrict-prototypes -Wmissing-prototypes -Wshadow -Wformat=2 \
	-Wvla -fno-common -Wno-format-nonliteral -Werror
LDLIBS := -pthread -lrt

# Code under test of each harness.
SRC_stmt := core/cli/stmt.c
SRC_bkfmt := core/cli/bkfmt.c core/cli/crc32c.c
SRC_shm := $(wildcard core/*.c)

objs = $(patsubst %.c,$(FB)/obj/%.o,$(SRC_$(1)))
BINS := $(FUZZ_HARNESSES:%=$(FB)/fuzz_%)
# At least 1: -max_total_time=0 would mean "forever".
PER_HARNESS := $(shell n=$$(( $(FUZZ_SECONDS) / $(words $(FUZZ_HARNESSES)) )); \
	[ $$n -ge 1 ] || n=1; echo $$n)

# Stack traces with file and line: the compiler's own llvm-symbolizer
# (found even when only the versioned llvm-<v> package is installed).
SYMBOLIZER := $(shell p=$$($(FUZZ_CC) -print-prog-name=llvm-symbolizer 2>/dev/null); \
	[ -x "$$p" ] && echo "$$p" || ls /usr/lib/llvm-*/bin/llvm-symbolizer 2>/dev/null | tail -n 1)
ifneq ($(SYMBOLIZER),)
export ASAN_SYMBOLIZER_PATH := $(SYMBOLIZER)
export UBSAN_SYMBOLIZER_PATH := $(SYMBOLIZER)
endif

# libFuzzer flags common to both modes.  -detect_leaks stays on.
RUN_FLAGS := -rss_limit_mb=$(FUZZ_RSS_MB) -timeout=$(FUZZ_TIMEOUT) \
	-print_final_stats=0

.DEFAULT_GOAL := all
.PHONY: all build regress fuzz seeds
# Keep the objects: a rebuild after an edit recompiles only what changed.
.SECONDARY:

build: $(BINS)

$(FB)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@printf '  %-7s %s\n' CLANG $<
	@$(FUZZ_CC) $(LIB_CFLAGS) -MMD -MP -c -o $@ $<

$(FB)/fuzz_%.o: tests/fuzz/fuzz_%.c
	@mkdir -p $(dir $@)
	@printf '  %-7s %s\n' CLANG $<
	@$(FUZZ_CC) $(FUZZ_CFLAGS) $(HARNESS_WARN) -fsanitize=fuzzer-no-link -MMD -MP -c -o $@ $<

.SECONDEXPANSION:
$(FB)/fuzz_%: $(FB)/fuzz_%.o $$(call objs,$$*)
	@printf '  %-7s %s\n' LD $@
	@$(FUZZ_CC) $(SAN) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

# Input size limits of the fuzzing runs, per harness.
MAXLEN_stmt := 4096
MAXLEN_bkfmt := 12288
MAXLEN_shm := 1024

# The two modes as shell loops, so that every harness runs even after a
# failure and the loop fails at the end if any harness did.  The shm
# harness puts its sets in an instance of its own (VDI_FUZZ_INSTANCE) so
# that what a crashed run left in /dev/shm can be removed without
# touching anyone else's sets.
define regress_loop
fail=0; inst=FZ$$$$; \
for h in $(FUZZ_HARNESSES); do \
	seeds=$$(find tests/fuzz/corpus/$$h -type f 2>/dev/null | sort); \
	kept=$$(find tests/fuzz/regress/$$h -type f 2>/dev/null | sort); \
	printf '  %-7s %s (%s seeds, %s kept crashes)\n' REGRESS $$h \
		$$(printf '%s\n' $$seeds | grep -c .) $$(printf '%s\n' $$kept | grep -c .); \
	for f in "$$seeds" $$kept; do \
		[ -n "$$f" ] || continue; \
		if ! VDI_FUZZ_INSTANCE=$$inst $(FB)/fuzz_$$h $(RUN_FLAGS) \
			-artifact_prefix=$(FB)/crashes/$$h- $$f \
			> $(FB)/regress-$$h.log 2>&1; then \
			cp $(FB)/regress-$$h.log $(FB)/regress-$$h-failed-$$(basename $$(printf '%s\n' $$f | tail -n 1)).log; \
			echo "fuzz: $$h fails on a committed input ($(FB)/regress-$$h-failed-*.log):"; \
			grep -E '^Running:' $(FB)/regress-$$h.log | tail -n 1 | sed 's/^/    /'; \
			grep -E 'contract violated|ERROR:|SUMMARY' $(FB)/regress-$$h.log | head -n 2 | sed 's/^/    /'; \
			fail=1; \
		fi; \
		rm -f /dev/shm/vdi.$$inst.* /dev/shm/vdi-b*.$$inst.*; \
	done; \
done; exit $$fail
endef

define fuzz_loop
fail=0; inst=FZ$$$$; \
for h in $(FUZZ_HARNESSES); do \
	mkdir -p $(FB)/corpus/$$h; \
	printf '  %-7s %s (%s s)\n' FUZZ $$h $(PER_HARNESS); \
	eval "ml=\$$MAXLEN_$$h"; \
	if ! VDI_FUZZ_INSTANCE=$$inst $(FB)/fuzz_$$h $(RUN_FLAGS) \
		-max_total_time=$(PER_HARNESS) -max_len=$$ml \
		-artifact_prefix=$(FB)/crashes/$$h- $(FUZZ_ARGS) \
		$(FB)/corpus/$$h tests/fuzz/corpus/$$h \
		> $(FB)/fuzz-$$h.log 2>&1; then \
		echo "fuzz: $$h crashed, see $(FB)/fuzz-$$h.log and $(FB)/crashes/"; \
		grep -E 'contract violated|ERROR:|SUMMARY|Test unit written' $(FB)/fuzz-$$h.log | tail -n 4; \
		fail=1; \
	else \
		grep -E '^#[0-9]+[[:space:]]+DONE' $(FB)/fuzz-$$h.log | sed 's/^/          /'; \
	fi; \
	rm -f /dev/shm/vdi.$$inst.* /dev/shm/vdi-b*.$$inst.*; \
done; exit $$fail
endef
export MAXLEN_stmt MAXLEN_bkfmt MAXLEN_shm

# Both modes in one recipe: fuzzing runs even when a kept crash still
# fails, and the result is a failure if either did.
all: build
	@mkdir -p $(FB)/crashes
	@r=0; ( $(regress_loop) ) || r=1; ( $(fuzz_loop) ) || r=1; exit $$r

regress: build
	@mkdir -p $(FB)/crashes
	@$(regress_loop)

fuzz: build
	@mkdir -p $(FB)/crashes
	@$(fuzz_loop)

# Regenerates the backup-format seeds from the real writer.
seeds: $(FB)/gen_bkfmt_seeds
	@rm -f tests/fuzz/corpus/bkfmt/seed*
	@$(FB)/gen_bkfmt_seeds tests/fuzz/corpus/bkfmt

$(FB)/gen_bkfmt_seeds: tests/fuzz/gen_bkfmt_seeds.c $(SRC_bkfmt)
	@mkdir -p $(dir $@)
	@printf '  %-7s %s\n' CLANG $@
	@$(FUZZ_CC) -std=c11 -D_GNU_SOURCE -pthread -g -O1 -Wall -Wextra -Icore/cli -o $@ $^

-include $(shell find $(FB) -name '*.d' 2>/dev/null)
