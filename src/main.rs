fn main() {
    std::process::exit(csbox::cli::main());
}
