fn main() {
    if let Err(e) = skua::cli::main() {
        eprintln!("skua: {e:#}");
        std::process::exit(1);
    }
}
