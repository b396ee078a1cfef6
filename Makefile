# The two commands of the README. Both install what is missing first.
.PHONY: setup test demo bench deb

setup:
	./scripts/setup.sh

test: setup
	cargo xtask test

demo: setup
	cargo xtask demo

bench: setup
	cargo xtask bench

# The Debian package (cargo-deb), in target/debian/.
deb: setup
	cargo xtask deb
