//! The `enrichd` command line. Exit codes: 0 ok, 1 failed, 2 usage or configuration error.

use std::process::ExitCode;

fn main() -> ExitCode {
    enrichd::cli::main()
}
