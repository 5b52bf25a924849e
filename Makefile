# ringside — one GNU Makefile, out-of-tree builds in build/<variant>/.
#   make            release build (jemalloc)          -> build/release/ringside
#   make test       unit + integration tests, release and ASan+UBSan, plus a short fuzz run
#   make help       everything else
.DEFAULT_GOAL := all
SHELL := /bin/bash

V ?= 0
Q := $(if $(filter 1,$(V)),,@)

CC ?= cc
VARIANT ?= release
B := build/$(VARIANT)

SSL_CFLAGS := -I/usr/include/android
SSL_LIBS := -L/usr/lib/x86_64-linux-gnu/android -Wl,-rpath,/usr/lib/x86_64-linux-gnu/android -lssl -lcrypto
LLHTTP_DIR := /usr/share/llhttp
LLHTTP_INC := -I/usr/share/include/llhttp

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
        -Wno-missing-field-initializers
BASE_CFLAGS := -std=gnu11 -g -D_GNU_SOURCE -I. $(SSL_CFLAGS) $(LLHTTP_INC) -pthread -MMD -MP
LIBS := -luring -ljansson -lhiredis $(SSL_LIBS) -lpthread

ifeq ($(VARIANT),release)
  OPT := -O2
  LIBS += -ljemalloc
else ifeq ($(VARIANT),asan)
  OPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
  LDSAN := -fsanitize=address,undefined
else ifeq ($(VARIANT),fuzz)
  CC := clang
  OPT := -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -DRS_FUZZ=1
  LDSAN := -fsanitize=address,undefined
endif
CFLAGS_ALL := $(BASE_CFLAGS) $(OPT) $(CFLAGS)

# Every .c in a layer folder is part of the library, except the programs' mains.
MAINS := admin/main.c
LIB_SRCS := $(filter-out $(MAINS),$(wildcard core/*.c proto/*.c tls/*.c admin/*.c))
LLHTTP_SRCS := $(LLHTTP_DIR)/llhttp.c $(LLHTTP_DIR)/api.c $(LLHTTP_DIR)/http.c
LIB_OBJS := $(LIB_SRCS:%.c=$(B)/%.o) $(B)/www_assets.o \
            $(patsubst $(LLHTTP_DIR)/%.c,$(B)/llhttp/%.o,$(LLHTTP_SRCS))
LIB := $(B)/librs.a

UNIT_SRCS := $(wildcard tests/unit/*_test.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(B)/tests/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=build/fuzz/%)
BENCH_LIB_SRCS := bench/fake.c
BENCH_SRCS := $(filter-out $(BENCH_LIB_SRCS),$(wildcard bench/*.c))
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(B)/bench/%)
BENCH_LIB := $(B)/bench/libbench.a

WWW_FILES := $(shell find www -path www/node_modules -prune -o -type f \( -name '*.html' -o -name '*.js' -o -name '*.css' -o -name '*.svg' \) -print 2>/dev/null) \
             www/package-lock.json
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo 0.1.0)

.PHONY: all test unit integration asan fuzz fuzz-run bench bench-full bench-hold demo format lint help clean setup deps
all: deps $(B)/ringside $(BENCH_BINS)

# scripts/setup is cheap when everything is present; every entry point runs it once.
deps:
	$(Q)./scripts/setup

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_ALL) $(WARN) -DRS_VERSION='"$(VERSION)"' -c $< -o $@

# llhttp is generated code: project warnings do not apply to it.
$(B)/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS_ALL) -w -c $< -o $@

$(B)/www_assets.c: scripts/embed-www $(WWW_FILES)
	@mkdir -p $(dir $@)
	$(Q)/usr/bin/python3 scripts/embed-www www $@

# The API's OpenAPI description is built into api.o (.incbin).
$(B)/admin/api.o: admin/openapi.json

$(B)/www_assets.o: $(B)/www_assets.c
	$(Q)$(CC) $(CFLAGS_ALL) -w -c $< -o $@

# Nothing compiles before scripts/setup has installed the headers (make -j
# would otherwise start both at once on a fresh machine).
$(LIB_OBJS) $(B)/admin/main.o $(B)/www_assets.c $(BENCH_LIB_SRCS:%.c=$(B)/%.o): | deps

$(LIB): $(LIB_OBJS)
	$(Q)rm -f $@ && ar rcs $@ $^

$(B)/ringside: $(B)/admin/main.o $(LIB)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS_ALL) $(LDSAN) -o $@ $^ $(LIBS)

$(B)/tests/%: tests/unit/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS_ALL) $(WARN) -Wno-missing-prototypes $(LDSAN) -o $@ $< $(LIB) $(LIBS) -lcmocka

$(BENCH_LIB): $(BENCH_LIB_SRCS:%.c=$(B)/%.o)
	$(Q)rm -f $@ && ar rcs $@ $^

$(B)/bench/%: bench/%.c $(BENCH_LIB) $(LIB)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS_ALL) $(WARN) $(LDSAN) -o $@ $< $(BENCH_LIB) $(LIB) $(LIBS)

unit: deps $(UNIT_BINS)
	$(Q)./scripts/run-unit $(B)/tests

integration: deps $(B)/ringside $(BENCH_BINS)
	$(Q)RINGSIDE_BUILD=$(B) ./scripts/run-integration

asan:
	$(Q)$(MAKE) --no-print-directory VARIANT=asan unit integration

test: deps
	$(Q)./scripts/run-tests

# One sub-make builds the instrumented library; every target links against it.
.PHONY: fuzz-lib
fuzz-lib:
	$(Q)$(MAKE) --no-print-directory VARIANT=fuzz build/fuzz/librs.a

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c fuzz-lib
	@mkdir -p build/fuzz
	$(Q)clang $(BASE_CFLAGS) -O1 -fsanitize=fuzzer,address,undefined -DRS_FUZZ=1 $(WARN) -Wno-missing-prototypes \
	   -o $@ $< build/fuzz/librs.a $(filter-out -ljemalloc,$(LIBS))

fuzz: deps $(FUZZ_BINS)

FUZZ_SECONDS ?= 10
fuzz-run: fuzz
	$(Q)./scripts/run-fuzz $(FUZZ_SECONDS) $(FUZZ_BINS)

bench: all
	$(Q)./bench/run.sh short

bench-full: all
	$(Q)./bench/run.sh full

# issue 18's hold: 100,000 Proxmox consoles on this box, then SIGTERM under
# them (~10 min); not part of make bench / bench-full / test
bench-hold: all
	$(Q)nice /usr/bin/python3 bench/relay-bench.py hold

demo: all
	$(Q)./scripts/demo

format:
	$(Q)clang-format -i $(LIB_SRCS) $(MAINS) $(wildcard core/*.h proto/*.h tls/*.h admin/*.h tests/unit/*.c tests/fuzz/*.c bench/*.c)

lint:
	$(Q)clang-format --dry-run -Werror $(LIB_SRCS) $(MAINS) $(wildcard core/*.h proto/*.h tls/*.h admin/*.h)

clean:
	rm -rf build

help:
	@echo "make              release build (build/release/ringside)"
	@echo "make test         every test: unit + integration (release and ASan+UBSan) + short fuzz run"
	@echo "make unit         cmocka unit tests        (VARIANT=asan for sanitizers)"
	@echo "make integration  tests against the real daemon"
	@echo "make asan         unit + integration under ASan+UBSan"
	@echo "make fuzz         build libFuzzer targets; make fuzz-run FUZZ_SECONDS=60"
	@echo "make bench        the relays side by side, 3 interleaved rounds (~13 min); make bench-full for the full set"
	@echo "make bench-hold   ringside holding 100,000 Proxmox consoles, then SIGTERM under them (~10 min)"
	@echo "make demo         run ringside end to end and print a console URL"
	@echo "make format/lint  clang-format"
	@echo "V=1               show commands"

-include $(shell find build -name '*.d' 2>/dev/null)
