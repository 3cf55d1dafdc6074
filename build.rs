//! Link the daemon with packed relative relocations (`DT_RELR`) where the toolchain and the C
//! library support them (binutils 2.38+, glibc 2.36+).
//!
//! Why: the daemon is a position-independent executable, and with matrix-sdk linked it carries
//! about 65,000 relative relocations. As plain `RELA` entries (24 bytes each) they take 1.5 MB
//! that the dynamic loader reads once at start, and those pages then stay resident: 1.5 MB of the
//! idle RSS. Packed, the same relocations take a few kilobytes. The binary stays
//! position-independent (ASLR is unchanged).
//!
//! The flag is used only if a probe program linked with it also runs here, so an older linker or
//! C library gets the ordinary build instead of a failure.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let cross = std::env::var("HOST").ok() != std::env::var("TARGET").ok();
    if target_os != "linux" || target_env != "gnu" || cross {
        return;
    }
    const FLAG: &str = "-Wl,-z,pack-relative-relocs";
    if probe(FLAG) {
        println!("cargo:rustc-link-arg-bins={FLAG}");
    } else {
        println!("cargo:warning=linker or C library without DT_RELR support: relocations stay unpacked");
    }
}

/// Whether a C program linked as a PIE with `flag` builds and runs.
fn probe(flag: &str) -> bool {
    let Some(out) = std::env::var_os("OUT_DIR") else {
        return false;
    };
    let dir = std::path::PathBuf::from(out);
    let src = dir.join("relr_probe.c");
    let exe = dir.join("relr_probe");
    // A pointer in initialised data needs a relative relocation in a PIE.
    if std::fs::write(&src, "static int x; int *p = &x; int main(void) { return p != &x; }\n").is_err() {
        return false;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let built = Command::new(cc)
        .args(["-pie", "-fPIE", flag, "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .is_ok_and(|o| o.status.success());
    built && Command::new(&exe).status().is_ok_and(|s| s.success())
}
