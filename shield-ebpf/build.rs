//! Linker flags for bpf-linker.

fn main() {
    // bpf-linker passes `--bpf-expand-memcpy-in-order` to LLVM by default, which
    // sets the BPF backend's inline store limits to zero: every zeroed array
    // then becomes a call to a byte-at-a-time `memset` subprogram. Turning it
    // off lets LLVM emit plain 8-byte stores, which is both faster on the
    // per-packet path and easier on the verifier.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("bpf") {
        println!("cargo::rustc-link-arg-bins=--disable-expand-memcpy-in-order");
    }
}
