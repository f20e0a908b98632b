# vdifs top-level Makefile.
#
#   make                 build libvdi (static + shared), vdi, vdifs: needs
#                        libfuse3 and libuuid, not the check library
#   make tests           build the test and benchmark programs (check)
#   make check           build and run every test (unit suites, then
#                        integration scripts); each has a time limit
#   make bench           run the benchmarks (ratios, not assertions)
#   make install         PREFIX=/usr/local DESTDIR= and, below PREFIX unless
#                        given, LIBDIR=lib INCLUDEDIR=include BINDIR=bin
#                        MANDIR=share/man
#   make SANITIZE=address,undefined check | make SANITIZE=thread check
#   make format          clang-format every C file; format-check: only check
#   V=1                  show full commands;  WERROR=1  warnings as errors
#
# libvdi.so.0 exports the functions of core/vdi.h and nothing else: the
# library is compiled with -fvisibility=hidden, vdi.h marks its
# declarations default, and scripts/libvdi.map versions them (VDI_0).
# The ABI policy is docs/decisions.md D31.
#
# Sources are globbed: core/*.c is the library, core/cli/*.c the `vdi`
# command, fs/*.c the filesystem, tests/unit/check_*.c one engine suite
# each, tests/cli/check_*.c suites linked with the CLI's objects,
# tests/bench/*.c one benchmark each, tests/integration/*.sh scripts.

comma := ,
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
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
# The library's objects, static and shared: only what vdi.h declares is
# visible outside it.
LIB_CFLAGS := -fvisibility=hidden

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
say = @printf '  %-7s %s\n' '$(1)' '$(2)';
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
.PHONY: all tests check unit-check integration-check bench fuzz install uninstall clean format format-check FORCE
all: $(LIBA) $(LIBSO) $(BUILD)/libvdi.pc $(SQLVDI_TARGETS) $(VDI) $(BUILD)/vdi-sqlcmd $(if $(FS_SRC),$(VDIFS))
tests: $(UNIT_BIN) $(CLITEST_BIN) $(BENCH_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(ALL_CFLAGS) $(CPPFLAGS) -c -o $@ $<

$(BUILD)/core/%.o: core/%.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(ALL_CFLAGS) $(LIB_CFLAGS) $(CPPFLAGS) -c -o $@ $<

$(BUILD)/core/cli/%.o: core/cli/%.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(ALL_CFLAGS) $(CPPFLAGS) -c -o $@ $<

$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(call say,CC,$< [pic])$(CC) $(ALL_CFLAGS) $(LIB_CFLAGS) $(CPPFLAGS) -fPIC -c -o $@ $<

$(BUILD)/fs/%.o: fs/%.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(ALL_CFLAGS) $(FUSE_CFLAGS) $(CPPFLAGS) -c -o $@ $<

$(BUILD)/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) -Itests/lib -Icore/cli $(CPPFLAGS) -c -o $@ $<

$(LIBA): $(CORE_OBJ)
	$(call say,AR,$@)rm -f $@ && ar rcs $@ $^

$(LIBSO): $(CORE_PIC) scripts/libvdi.map
	$(call say,LD,$@)$(CC) -shared -Wl,-soname,libvdi.so.0 -Wl,--version-script=scripts/libvdi.map \
		-Wl,--no-undefined $(LDFLAGS) -o $@ $(CORE_PIC) $(LDLIBS_CORE)

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

$(BUILD)/sqlvdi.pc: scripts/sqlvdi.pc.in $(BUILD)/install-dirs
	$(call say,GEN,$@)sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
		-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' $< > $@

# The directories the .pc file names: rewritten only when they change,
# so that `make install PREFIX=/usr` after `make` installs a .pc that
# says /usr.
$(BUILD)/install-dirs: FORCE
	@mkdir -p $(dir $@)
	@echo '$(PREFIX) $(LIBDIR) $(INCLUDEDIR) $(VERSION)' | cmp -s - $@ || \
		echo '$(PREFIX) $(LIBDIR) $(INCLUDEDIR) $(VERSION)' > $@

$(BUILD)/libvdi.pc: scripts/libvdi.pc.in $(BUILD)/install-dirs
	$(call say,GEN,$@)sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
		-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' $< > $@

# vdi-sqlcmd: the same program, started by that name (core/cli/sqlcmd.c)
$(BUILD)/vdi-sqlcmd: $(VDI)
	@ln -sf vdi $@

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

# The FUSE ceiling (issue 11) is a filesystem of its own: libfuse3 only,
# no libvdi, no fs/ code.
$(BUILD)/tests/bench/fuse_ceiling.o: tests/bench/fuse_ceiling.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(ALL_CFLAGS) $(FUSE_CFLAGS) $(CPPFLAGS) -c -o $@ $<

$(BUILD)/bench/fuse_ceiling: $(BUILD)/tests/bench/fuse_ceiling.o
	@mkdir -p $(dir $@)
	$(call say,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(FUSE_LIBS) $(LDLIBS_CORE)

# Unit suites run one after another, each under a hard time limit.
unit-check: all tests
	@BUILD=$(BUILD) scripts/run-tests.sh unit $(UNIT_BIN) $(CLITEST_BIN)

integration-check: all tests
	@BUILD=$(BUILD) scripts/run-tests.sh integration $(wildcard tests/integration/*.sh)

check: all tests
	@BUILD=$(BUILD) scripts/run-tests.sh all $(UNIT_BIN) $(CLITEST_BIN) $(if $(SANITIZE),,$(wildcard tests/integration/*.sh))

bench: all tests
	@BUILD=$(BUILD) scripts/bench.sh

# libFuzzer harnesses (clang): tests/fuzz/fuzz.mk builds and runs them.
fuzz:
	@$(MAKE) --no-print-directory -f tests/fuzz/fuzz.mk FUZZ_SECONDS=$(or $(FUZZ_SECONDS),30)

install: all
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1
	install -m 644 $(LIBA) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(LIBSO) $(DESTDIR)$(LIBDIR)/
	ln -sf libvdi.so.0 $(DESTDIR)$(LIBDIR)/libvdi.so
	install -m 644 core/vdi.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 $(BUILD)/libvdi.pc $(DESTDIR)$(LIBDIR)/pkgconfig/
	$(if $(HAVE_CXX),install -d $(DESTDIR)$(INCLUDEDIR)/sqlvdi)
	$(if $(HAVE_CXX),install -m 644 core/sqlvdi/vdi.h core/sqlvdi/vdierror.h $(DESTDIR)$(INCLUDEDIR)/sqlvdi/)
	$(if $(HAVE_CXX),install -m 644 $(SQLVDI_A) $(DESTDIR)$(LIBDIR)/)
	$(if $(HAVE_CXX),install -m 755 $(SQLVDI_SO) $(DESTDIR)$(LIBDIR)/)
	$(if $(HAVE_CXX),install -m 644 $(BUILD)/sqlvdi.pc $(DESTDIR)$(LIBDIR)/pkgconfig/)
	install -m 755 $(VDI) $(DESTDIR)$(BINDIR)/
	ln -sf vdi $(DESTDIR)$(BINDIR)/vdi-sqlcmd
	$(if $(FS_SRC),install -m 755 $(VDIFS) $(DESTDIR)$(BINDIR)/)
	$(if $(wildcard docs/*.1),install -m 644 $(wildcard docs/*.1) $(DESTDIR)$(MANDIR)/man1/)

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libvdi.a $(DESTDIR)$(LIBDIR)/libvdi.so $(DESTDIR)$(LIBDIR)/libvdi.so.0 \
	  $(DESTDIR)$(INCLUDEDIR)/vdi.h $(DESTDIR)$(LIBDIR)/pkgconfig/libvdi.pc \
	  $(DESTDIR)$(INCLUDEDIR)/sqlvdi/vdi.h $(DESTDIR)$(INCLUDEDIR)/sqlvdi/vdierror.h \
	  $(DESTDIR)$(LIBDIR)/libsqlvdi.so $(DESTDIR)$(LIBDIR)/libsqlvdi.a $(DESTDIR)$(LIBDIR)/pkgconfig/sqlvdi.pc \
	  $(DESTDIR)$(BINDIR)/vdi $(DESTDIR)$(BINDIR)/vdi-sqlcmd $(DESTDIR)$(BINDIR)/vdifs \
	  $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(wildcard docs/*.1)))

# Every C file of the tree: the library, the command, the filesystem and
# the tests, in the style .clang-format says.  Versions of clang-format
# format differently: the tree follows 14 (Debian 12), which CI installs.
FORMAT_SRC := $(sort $(wildcard core/*.[ch] core/cli/*.[ch] fs/*.[ch] tests/*/*.[ch]))
CLANG_FORMAT ?= clang-format

format:
	$(CLANG_FORMAT) -i $(FORMAT_SRC)

format-check:
	@$(CLANG_FORMAT) --dry-run --Werror $(FORMAT_SRC) && echo "format-check: $(words $(FORMAT_SRC)) files follow .clang-format"

clean:
	rm -rf build build-*

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
