# qemu-xen-block: entry points.
#
#   make demo      build, then a simulated guest's verified I/O and a benchmark
#   make check     run every test layer (the CI command)
#   make qemu      build qemu-system-i386 (build/qemu-release)
#   make qemu-asan build it with AddressSanitizer and UBSan (build/qemu-asan)
#   make unit      protocol-layer unit tests (no QEMU build needed)
#   make coverage  unit tests with gcov; report in build/coverage/
#   make fuzz      run the libFuzzer targets for FUZZ_SECONDS each
#   make install   install qemu-system-i386 and its data under PREFIX

BUILD       ?= $(CURDIR)/build
export XBLK_BUILD := $(BUILD)
QEMU_SRC    := $(BUILD)/qemu-src
PREFIX      ?= /usr/local/lib/qemu-xen-block
FUZZ_SECONDS ?= 30

# Expanded when used, not when make starts: on a fresh machine the GLib
# headers arrive with the deps target, after the Makefile was read.
GLIB_CFLAGS = $(shell pkg-config --cflags glib-2.0 2>/dev/null)
GLIB_LIBS   = $(shell pkg-config --libs glib-2.0 2>/dev/null)
# The protocol layer builds against a stand-in qemu/osdep.h and the Xen
# interface headers of the fetched (not built) QEMU tree.
PROTO_CFLAGS = -std=gnu11 -g -O1 -Wall -Wextra -Wno-unused-parameter \
               -Wno-missing-field-initializers -Werror \
               -I$(CURDIR)/tests/unit/stub -I$(CURDIR) -I$(QEMU_SRC)/include \
               $(GLIB_CFLAGS)
PROTO_SRCS  := hw/block/xen_blkif.c hw/block/xen_vbd.c
UNIT_TESTS  := test-xen-blkif test-xen-vbd
FUZZERS     := fuzz-blkif-request fuzz-xenstore-values

# xensim: Xen in user space (tests/xensim), and xenblk-front
XS          := tests/xensim
XSB         := $(BUILD)/xensim
XS_CFLAGS    = -std=gnu11 -O2 -g -Wall -Wextra -Wno-unused-parameter \
               -Wno-sign-compare -Wno-missing-field-initializers $(GLIB_CFLAGS)
FRONT_SRCS  := $(addprefix $(XS)/,xenblk-front.c blkfront.c blkif-abi.c \
               xs-util.c toolstack.c loadgen.c verify.c hostile.c ideal.c)
XENSIM_BINS := $(addprefix $(XSB)/,libxensim.so xensimd xensimctl \
               xenblk-front test-xenstored test-libxensim)

.PHONY: all demo check deps source qemu qemu-asan unit coverage fuzz \
        xensim install clean

all: qemu

# INSTALL_DEPS: the command behind deps (a test stands in its own).
INSTALL_DEPS ?= scripts/install-deps.sh

deps:
	$(INSTALL_DEPS)

source: deps
	scripts/fetch-qemu.sh $(QEMU_SRC)

qemu: deps
	scripts/build-qemu.sh release

qemu-asan: deps
	scripts/build-qemu.sh asan

demo: qemu xensim
	scripts/demo.py

# ---- unit tests: GLib g_test, TAP output ----

$(BUILD)/unit/%: tests/unit/%.c $(PROTO_SRCS) hw/block/*.h | source
	@mkdir -p $(dir $@)
	$(CC) $(PROTO_CFLAGS) -o $@ $< $(PROTO_SRCS) $(GLIB_LIBS)

unit: $(addprefix $(BUILD)/unit/,$(UNIT_TESTS))
	@for t in $^; do $$t --tap || exit 1; done

# ---- coverage of the protocol layer ----

coverage: source
	@rm -rf $(BUILD)/coverage && mkdir -p $(BUILD)/coverage
	@for t in $(UNIT_TESTS); do \
	    (cd $(BUILD)/coverage && \
	     $(CC) $(PROTO_CFLAGS) -O0 --coverage -o $$t \
	         $(CURDIR)/tests/unit/$$t.c $(addprefix $(CURDIR)/,$(PROTO_SRCS)) \
	         $(GLIB_LIBS) && ./$$t > $$t.log) || exit 1; \
	done
	scripts/check-coverage.sh $(BUILD)/coverage

# ---- fuzzing: clang's libFuzzer with ASan and UBSan ----

FUZZ_CFLAGS = $(PROTO_CFLAGS) -O1 -fsanitize=fuzzer,address,undefined \
              -fno-sanitize-recover=all

$(BUILD)/fuzz/%: tests/fuzz/%.c $(PROTO_SRCS) hw/block/*.h | source
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $< $(PROTO_SRCS) $(GLIB_LIBS)

fuzz: $(addprefix $(BUILD)/fuzz/,$(FUZZERS))
	@for f in $(FUZZERS); do \
	    scripts/run-fuzzer.sh $(BUILD)/fuzz/$$f tests/fuzz/corpus/$$f \
	        $(FUZZ_SECONDS) || exit 1; \
	done

# ---- xensim ----

xensim: $(XENSIM_BINS)

# libxen-dev and GLib come with the deps (a fresh machine has neither).
$(XENSIM_BINS): | deps

$(XSB)/libxensim.so: $(XS)/libxensim.c $(XS)/xensim.h
	@mkdir -p $(dir $@)
	$(CC) $(XS_CFLAGS) -fPIC -shared -fvisibility=hidden -o $@ $< -lpthread

$(XSB)/xensimd: $(XS)/xensimd.c $(XS)/xenstored.c $(XS)/xensim.h \
                $(XS)/xenstored.h
	@mkdir -p $(dir $@)
	$(CC) $(XS_CFLAGS) -o $@ $(XS)/xensimd.c $(XS)/xenstored.c \
	    $(GLIB_LIBS) -lxenstore -lpthread

$(XSB)/xensimctl: $(XS)/xensimctl.c $(XS)/xensim.h
	@mkdir -p $(dir $@)
	$(CC) $(XS_CFLAGS) -o $@ $<

$(XSB)/xenblk-front: $(FRONT_SRCS) $(wildcard $(XS)/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(XS_CFLAGS) -o $@ $(FRONT_SRCS) $(GLIB_LIBS) \
	    -lxenstore -lxenevtchn -lxengnttab -lpthread

$(XSB)/test-xenstored: $(XS)/test-xenstored.c $(XS)/xenstored.c \
                       $(XS)/xenstored.h
	@mkdir -p $(dir $@)
	$(CC) $(XS_CFLAGS) -o $@ $(XS)/xenstored.c $(XS)/test-xenstored.c \
	    $(GLIB_LIBS) -lxenstore -lpthread

$(XSB)/test-libxensim: $(XS)/test-libxensim.c $(XS)/libxensim.c \
                       $(XS)/xensim.h
	@mkdir -p $(dir $@)
	$(CC) $(XS_CFLAGS) -o $@ $(XS)/test-libxensim.c $(XS)/libxensim.c \
	    $(GLIB_LIBS) -lpthread

# ---- the whole suite ----

check: deps
	tests/run.sh

install: qemu
	scripts/install.sh $(BUILD)/qemu-release $(DESTDIR)$(PREFIX)

clean:
	rm -rf $(BUILD)/unit $(BUILD)/fuzz $(BUILD)/coverage
