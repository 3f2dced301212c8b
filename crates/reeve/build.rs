//! Link-time layout of the `reeve` binary: the functions the agent runs (start-up, an idle
//! node, restarts, the local API) are placed together at the start of its code
//! (`hot-symbols.txt`, one symbol a line, from `bench/hot-symbols`), so the agent's
//! resident code is about their size and not most of the binary's. The kernel maps a file
//! page together with its cached neighbours (fault-around, 64 KiB), so the agent's few
//! functions scattered over a binary that also holds the CLI, the hub and the TUI kept
//! ~5 MiB of code resident. Release builds on x86-64 Linux only (linked by LLD, the
//! toolchain's default there); a symbol missing from the binary is skipped without a word.
//! Also packs the relative relocations (see below).

fn main() {
    println!("cargo:rerun-if-changed=hot-symbols.txt");
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    if target == "x86_64-unknown-linux-gnu" && profile == "release" {
        let file = std::path::Path::new(&dir).join("hot-symbols.txt");
        if file.is_file() {
            println!(
                "cargo:rustc-link-arg-bin=reeve=-Wl,--symbol-ordering-file={}",
                file.display()
            );
            println!("cargo:rustc-link-arg-bin=reeve=-Wl,--no-warn-symbol-ordering");
        }
        // Relative relocations packed (DT_RELR, glibc >= 2.36): a few KB instead of the
        // ~350 KB `.rela.dyn` the dynamic loader reads, and keeps resident, at every start.
        println!("cargo:rustc-link-arg-bin=reeve=-Wl,-z,pack-relative-relocs");
    }
}
