//! `poc`: one binary for every role of the PoC v2 system. This crate only wires the
//! domain crates to a command line; it holds no protocol logic of its own.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc keeps freed pages for reuse: the model forward allocates and frees large
/// activation buffers on every layer, which the system allocator would hand back to the
/// kernel and fault in again each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns memory freed after a large transient phase (such as store recovery) to the
/// operating system now instead of when the allocator next gets around to it.
pub fn release_free_memory() {
    // SAFETY: `mi_collect` only walks the allocator's own free lists; it is safe to call
    // from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
