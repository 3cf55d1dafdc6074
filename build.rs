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
//!
//! Also: whether the integration tests can run on Conduit too (see `conduit()`), and the storage
//! tests on PostgreSQL too (see `postgres()`).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    conduit();
    postgres();
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

/// The integration tests run on Synapse and, when its binary is here, on Conduit: `CONDUIT_BIN`,
/// or `../shared/conduit/conduit` beside the repository. With it, `cfg(tgmx_conduit)` turns on
/// the Conduit variant of every test and `TGMX_CONDUIT_BIN` names the binary.
fn conduit() {
    println!("cargo:rustc-check-cfg=cfg(tgmx_conduit)");
    println!("cargo:rerun-if-env-changed=CONDUIT_BIN");
    let manifest = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let path = match std::env::var_os("CONDUIT_BIN") {
        Some(p) => manifest.join(p),
        None => manifest.join("../shared/conduit/conduit"),
    };
    match path.canonicalize() {
        Ok(abs) if abs.is_file() => {
            println!("cargo:rerun-if-changed={}", abs.display());
            println!("cargo:rustc-cfg=tgmx_conduit");
            println!("cargo:rustc-env=TGMX_CONDUIT_BIN={}", abs.display());
        }
        _ => {
            // A missing path would make cargo rerun this script on every build; its directory,
            // when there is one, is watched instead, so that adding the binary is noticed.
            if let Some(dir) = path.parent().filter(|d| d.is_dir() && !manifest.starts_with(d)) {
                println!("cargo:rerun-if-changed={}", dir.display());
            }
            println!(
                "cargo:warning=Conduit not found at {}: integration tests run on Synapse only",
                path.display()
            );
        }
    }
}

/// The storage tests run on SQLite and, when PostgreSQL is here, on PostgreSQL too: a server named
/// by `TGMX_TEST_POSTGRES_URL`, or `initdb` (on the `PATH` or in `/usr/lib/postgresql/*/bin`) for
/// the throwaway cluster of `tests/rig/postgres.sh`. With it, `cfg(tgmx_postgres)` turns on the
/// PostgreSQL variant of every storage test. Without it a developer gets one warning;
/// `TGMX_REQUIRE_POSTGRES=1` (CI) makes it an error.
fn postgres() {
    println!("cargo:rustc-check-cfg=cfg(tgmx_postgres)");
    println!("cargo:rerun-if-env-changed=TGMX_TEST_POSTGRES_URL");
    println!("cargo:rerun-if-env-changed=TGMX_REQUIRE_POSTGRES");
    // Installing the distribution's package is noticed (not every change of PATH: that would
    // rebuild the crate whenever a shell's PATH differs).
    if std::path::Path::new("/usr/lib/postgresql").is_dir() {
        println!("cargo:rerun-if-changed=/usr/lib/postgresql");
    }
    let url = std::env::var("TGMX_TEST_POSTGRES_URL").is_ok_and(|u| !u.is_empty());
    let on_path =
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("initdb").is_file()));
    let packaged = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().any(|d| d.path().join("bin/initdb").is_file()))
        .unwrap_or(false);
    if url || on_path || packaged {
        println!("cargo:rustc-cfg=tgmx_postgres");
    } else if std::env::var("TGMX_REQUIRE_POSTGRES").is_ok_and(|v| !v.is_empty() && v != "0") {
        panic!(
            "TGMX_REQUIRE_POSTGRES is set but there is no PostgreSQL here (no initdb, no \
             TGMX_TEST_POSTGRES_URL): install it (Debian: apt-get install postgresql)"
        );
    } else {
        println!(
            "cargo:warning=PostgreSQL not found (no initdb, no TGMX_TEST_POSTGRES_URL): storage tests run on SQLite only"
        );
    }
}
