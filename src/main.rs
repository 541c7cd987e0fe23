//! The `mux-bw` binary: everything lives in the library; this maps the outcome to an exit code.

fn main() {
    std::process::exit(mux_bw::cli::main());
}
