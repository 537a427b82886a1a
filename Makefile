# Convenience front end: the two commands of the README quick start.
#   make demo   install what is missing, build, analyse sample_scans/
#   make test   install what is missing, build, run the whole test suite
BUILD ?= build
JOBS  ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
MAKEFLAGS += --no-print-directory

.PHONY: all deps build demo test clean format bench sanitize

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

demo: build
	@scripts/demo.sh $(BUILD)/paraspinal

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

sanitize:
	@$(MAKE) test BUILD=build-asan CMAKE_FLAGS="-DPSP_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug"

bench: build
	@bench/run.sh $(BUILD)/paraspinal

# --- reliability: fuzzing, valgrind, ThreadSanitizer (README "Reliability") --
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 60
FUZZ_LONG_SECONDS ?= 3600
TSAN_BUILD ?= build-tsan

.PHONY: fuzz fuzz-long valgrind tsan check-deep

fuzz: deps
	@for t in $(FUZZ_TARGETS); do tests/fuzz/run.sh $$t $(FUZZ_SECONDS) || exit 1; done

fuzz-long: deps
	@for t in $(FUZZ_TARGETS); do tests/fuzz/run.sh $$t $(FUZZ_LONG_SECONDS) || exit 1; done

valgrind: build
	@tests/reliability/memcheck.sh $(abspath $(BUILD))/paraspinal $(CURDIR) $(abspath $(BUILD))/memcheck

tsan: deps
	@CC=clang CXX=clang++ cmake -S . -B $(TSAN_BUILD) -DPSP_TSAN=ON >/dev/null
	@cmake --build $(TSAN_BUILD) -j $(JOBS) >$(TSAN_BUILD).log 2>&1 || { tail -30 $(TSAN_BUILD).log; exit 1; }
	@tests/reliability/tsan.sh $(abspath $(TSAN_BUILD))/paraspinal $(CURDIR) $(abspath $(TSAN_BUILD))/tsan \
	  $(abspath $(TSAN_BUILD))

check-deep: sanitize valgrind tsan fuzz

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) build-asan build-fuzz $(TSAN_BUILD)
