//! The `jetship` binary: parse the command line, set up logging, run, and map the error to an exit code.

use clap::Parser;

fn main() {
    let cli = jetship::cli::Cli::parse();
    jetship::install_crypto_provider();
    let code = match jetship::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("jetship: {err:#}");
            jetship::cli::exit_code(&err)
        }
    };
    std::process::exit(code);
}
