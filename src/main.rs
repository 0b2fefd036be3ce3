//! The `skua` binary: everything is in the library's [`skua::cli`].
#![forbid(unsafe_code)]
fn main() {
    if let Err(e) = skua::cli::main() {
        eprintln!("skua: {e:#}");
        std::process::exit(1);
    }
}
