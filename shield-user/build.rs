//! Builds the XDP object (`shield-ebpf`) for bpfel-unknown-none with aya-build
//! and leaves it in OUT_DIR, where `kernel::load` embeds it.

fn main() -> anyhow::Result<()> {
    // The eBPF crate needs `-Z build-std=core`; RUSTC_BOOTSTRAP lets the pinned
    // stable toolchain (rust-toolchain.toml) accept it.
    std::env::set_var("RUSTC_BOOTSTRAP", "1");
    // Build with the toolchain cargo itself runs under (the pinned one).
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "1.98.0".into());
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shield-ebpf");
    println!("cargo::rerun-if-changed=../shield-common/src");
    aya_build::build_ebpf(
        [aya_build::Package { name: "shield-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
