# vdifs top-level Makefile.
#
#   make                 build libvdi (static + shared), vdi, vdifs
#   make check           build and run every test (unit suites, then
#                        integration scripts); each has a time limit
#   make bench           run the benchmarks (ratios, not assertions)
#   make install         PREFIX=/usr/local DESTDIR=
#   make SANITIZE=address,undefined check | make SANITIZE=thread check
#   V=1                  show full commands;  WERROR=1  warnings as errors
#
# Sources are globbed: core/*.c is the library, core/cli/*.c the `vdi`
# command, fs/*.c the filesystem, tests/unit/check_*.c one engine suite
# each, tests/cli/check_*.c suites linked with the CLI's objects,
# tests/bench/*.c one benchmark each, tests/integration/*.sh scripts.

comma := ,
PREFIX ?= /usr/local
DESTDIR ?=
BUILD ?= build
CC ?= cc
VERSION := 0.1.0

WARN := -Wall -Wextra -Wstrict-prototypes -Wmissing-prototypes -Wshadow \
	-Wformat=2 -Wvla -fno-common -Wno-format-nonliteral
ifeq ($(WERROR),1)
WARN += -Werror
endif
ifneq ($(CI),)
WARN += -Werror
endif

OPT ?= -O2 -g
CFLAGS ?= $(OPT)
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE -pthread $(WARN) $(CFLAGS) -MMD -MP -Icore
LDLIBS_CORE := -pthread -lrt

ifneq ($(SANITIZE),)
ifneq ($(filter-out address undefined thread,$(subst $(comma), ,$(SANITIZE))),)
$(error unknown SANITIZE value '$(SANITIZE)': use address,undefined or thread)
endif
ALL_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -O1
LDFLAGS += -fsanitize=$(SANITIZE)
override BUILD := $(BUILD)-$(subst $(comma),-,$(SANITIZE))
endif

PKG_CONFIG ?= pkg-config
FUSE_CFLAGS = $(shell $(PKG_CONFIG) --cflags fuse3)
FUSE_LIBS = $(shell $(PKG_CONFIG) --libs fuse3)
CHECK_CFLAGS = $(shell $(PKG_CONFIG) --cflags check)
CHECK_LIBS = $(shell $(PKG_CONFIG) --libs check)
UUID_LIBS = $(shell $(PKG_CONFIG) --libs uuid)

# The Microsoft-API layer (libsqlvdi) is C++; it is built whenever a C++
# compiler exists, and nothing else needs one.
CXX ?= c++
HAVE_CXX := $(shell command -v $(CXX) >/dev/null 2>&1 && echo 1)
CXXWARN := -Wall -Wextra -Wshadow -Wformat=2 -Wvla -Wmissing-declarations -Wno-format-nonliteral
ifneq ($(filter -Werror,$(WARN)),)
CXXWARN += -Werror
endif
ALL_CXXFLAGS := -std=c++11 -D_GNU_SOURCE -pthread -fno-exceptions -fno-rtti $(CXXWARN) \
	$(filter-out -fsanitize=% -fno-omit-frame-pointer,$(CFLAGS)) \
	$(filter -fsanitize=% -fno-omit-frame-pointer -O1,$(ALL_CFLAGS)) -MMD -MP -Icore

ifeq ($(V),1)
Q :=
say :=
else
Q := @
say = @printf '  %-7s %s\n' $(1) $(2);
endif

CORE_SRC := $(wildcard core/*.c)
CLI_SRC := $(wildcard core/cli/*.c)
FS_SRC := $(wildcard fs/*.c)
UNIT_SRC := $(wildcard tests/unit/check_*.c)
CLITEST_SRC := $(wildcard tests/cli/check_*.c)
BENCH_SRC := $(wildcard tests/bench/*.c)
TESTLIB_SRC := $(wildcard tests/lib/*.c)

CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o)
CORE_PIC := $(CORE_SRC:%.c=$(BUILD)/pic/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
CLI_LIBOBJ := $(filter-out $(BUILD)/core/cli/main.o,$(CLI_OBJ))
FS_OBJ := $(FS_SRC:%.c=$(BUILD)/%.o)
TESTLIB_OBJ := $(TESTLIB_SRC:%.c=$(BUILD)/%.o)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
CLITEST_BIN := $(CLITEST_SRC:tests/cli/%.c=$(BUILD)/tests/%)
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)

SQLVDI_SO := $(BUILD)/libsqlvdi.so
SQLVDI_A := $(BUILD)/libsqlvdi.a
SQLVDI_TARGETS := $(if $(HAVE_CXX),$(SQLVDI_SO) $(SQLVDI_A) $(BUILD)/sqlvdi.pc)

LIBA := $(BUILD)/libvdi.a
LIBSO := $(BUILD)/libvdi.so.0
VDI := $(BUILD)/vdi
VDIFS := $(BUILD)/vdifs

.SECONDARY:
.PHONY: all check unit-check integration-check bench fuzz install uninstall clean format format-check
all: $(LIBA) $(LIBSO) $(BUILD)/libvdi.pc $(SQLVDI_TARGETS) $(VDI) $(if $(FS_SRC),$(VDIFS)) $(UNIT_BIN) $(CLITEST_BIN) $(BENCH_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(ALL_CFLAGS) $(CPPFLAGS) -c -o $@ $<

$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(call say,CC,$< [pic])$(CC) $(ALL_CFLAGS) $(CPPFLAGS) -fPIC -c -o $@ $<

$(BUILD)/fs/%.o: fs/%.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(ALL_CFLAGS) $(FUSE_CFLAGS) $(CPPFLAGS) -c -o $@ $<

$(BUILD)/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) -Itests/lib -Icore/cli $(CPPFLAGS) -c -o $@ $<

$(LIBA): $(CORE_OBJ)
	$(call say,AR,$@)rm -f $@ && ar rcs $@ $^

$(LIBSO): $(CORE_PIC)
	$(call say,LD,$@)$(CC) -shared -Wl,-soname,libvdi.so.0 $(LDFLAGS) -o $@ $^ $(LDLIBS_CORE)

# libsqlvdi: Microsoft's two classes over libvdi, self-contained (a client
# links -lsqlvdi alone, as with Microsoft's library); only the classes'
# members are exported, so its libvdi never meets the caller's.
$(BUILD)/pic/core/sqlvdi/%.o: core/sqlvdi/%.cpp
	@mkdir -p $(dir $@)
	$(call say,CXX,$<)$(CXX) $(ALL_CXXFLAGS) $(CPPFLAGS) -fPIC -c -o $@ $<

$(SQLVDI_SO): $(BUILD)/pic/core/sqlvdi/sqlvdi.o $(CORE_PIC) scripts/libsqlvdi.map
	$(call say,LD,$@)$(CXX) -shared -Wl,-soname,libsqlvdi.so -Wl,--version-script=scripts/libsqlvdi.map \
	  $(LDFLAGS) -o $@ $(filter %.o,$^) $(LDLIBS_CORE)

$(SQLVDI_A): $(BUILD)/pic/core/sqlvdi/sqlvdi.o $(CORE_PIC)
	$(call say,AR,$@)rm -f $@ && ar rcs $@ $^

$(BUILD)/sqlvdi.pc: scripts/sqlvdi.pc.in
	@mkdir -p $(dir $@)
	$(call say,GEN,$@)sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' $< > $@

$(BUILD)/libvdi.pc: scripts/libvdi.pc.in
	@mkdir -p $(dir $@)
	$(call say,GEN,$@)sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' $< > $@

$(VDI): $(CLI_OBJ) $(LIBA)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(UUID_LIBS) $(LDLIBS_CORE)

$(VDIFS): $(FS_OBJ) $(LIBA)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(FUSE_LIBS) $(UUID_LIBS) $(LDLIBS_CORE)

$(BUILD)/tests/check_%: $(BUILD)/tests/unit/check_%.o $(TESTLIB_OBJ) $(LIBA)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(UUID_LIBS) $(LDLIBS_CORE)

$(BUILD)/tests/check_cli_%: $(BUILD)/tests/cli/check_cli_%.o $(TESTLIB_OBJ) $(CLI_LIBOBJ) $(LIBA)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(UUID_LIBS) $(LDLIBS_CORE)

$(BUILD)/bench/%: $(BUILD)/tests/bench/%.o $(TESTLIB_OBJ) $(LIBA)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(UUID_LIBS) $(LDLIBS_CORE)

# Unit suites run one after another, each under a hard time limit.
unit-check: all
	@BUILD=$(BUILD) scripts/run-tests.sh unit $(UNIT_BIN) $(CLITEST_BIN)

integration-check: all
	@BUILD=$(BUILD) scripts/run-tests.sh integration $(wildcard tests/integration/*.sh)

check: all
	@BUILD=$(BUILD) scripts/run-tests.sh all $(UNIT_BIN) $(CLITEST_BIN) $(if $(SANITIZE),,$(wildcard tests/integration/*.sh))

bench: all
	@BUILD=$(BUILD) scripts/bench.sh

# libFuzzer harnesses (clang): tests/fuzz/fuzz.mk builds and runs them.
fuzz:
	@$(MAKE) --no-print-directory -f tests/fuzz/fuzz.mk FUZZ_SECONDS=$(or $(FUZZ_SECONDS),30)

install: all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 644 $(LIBA) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(LIBSO) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libvdi.so.0 $(DESTDIR)$(PREFIX)/lib/libvdi.so
	install -m 644 core/vdi.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(BUILD)/libvdi.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/
	$(if $(HAVE_CXX),install -d $(DESTDIR)$(PREFIX)/include/sqlvdi)
	$(if $(HAVE_CXX),install -m 644 core/sqlvdi/vdi.h core/sqlvdi/vdierror.h $(DESTDIR)$(PREFIX)/include/sqlvdi/)
	$(if $(HAVE_CXX),install -m 644 $(SQLVDI_A) $(DESTDIR)$(PREFIX)/lib/)
	$(if $(HAVE_CXX),install -m 755 $(SQLVDI_SO) $(DESTDIR)$(PREFIX)/lib/)
	$(if $(HAVE_CXX),install -m 644 $(BUILD)/sqlvdi.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/)
	install -m 755 $(VDI) $(DESTDIR)$(PREFIX)/bin/
	$(if $(FS_SRC),install -m 755 $(VDIFS) $(DESTDIR)$(PREFIX)/bin/)
	$(if $(wildcard docs/*.1),install -m 644 $(wildcard docs/*.1) $(DESTDIR)$(PREFIX)/share/man/man1/)

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/lib/libvdi.a $(DESTDIR)$(PREFIX)/lib/libvdi.so $(DESTDIR)$(PREFIX)/lib/libvdi.so.0 \
	  $(DESTDIR)$(PREFIX)/include/vdi.h $(DESTDIR)$(PREFIX)/lib/pkgconfig/libvdi.pc \
	  $(DESTDIR)$(PREFIX)/include/sqlvdi/vdi.h $(DESTDIR)$(PREFIX)/include/sqlvdi/vdierror.h \
	  $(DESTDIR)$(PREFIX)/lib/libsqlvdi.so $(DESTDIR)$(PREFIX)/lib/libsqlvdi.a $(DESTDIR)$(PREFIX)/lib/pkgconfig/sqlvdi.pc \
	  $(DESTDIR)$(PREFIX)/bin/vdi $(DESTDIR)$(PREFIX)/bin/vdifs

format:
	clang-format -i $(CORE_SRC) $(CLI_SRC) $(FS_SRC) core/*.h

format-check:
	clang-format --dry-run --Werror $(CORE_SRC) core/*.h

clean:
	rm -rf build build-*

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
