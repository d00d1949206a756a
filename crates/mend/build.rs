//! Links mend's binaries with packed relative relocations (`-z pack-relative-relocs`, DT_RELR) on Linux
//! with glibc: a position-independent executable's relative relocations then take a few KiB instead of
//! 400 KiB of `.rela.dyn`, which the dynamic loader reads at every start and which stays resident (see
//! BENCHMARKS.md, idle footprint). Needs binutils >= 2.38 to link (an older `ld` ignores the unknown `-z`
//! keyword with a warning) and glibc >= 2.36 to run (Debian 12, Ubuntu 22.10 and later).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
