fn main() {
    csbox::trace::start();
    std::process::exit(csbox::cli::main());
}
