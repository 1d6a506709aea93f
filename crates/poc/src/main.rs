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

/// Raises the open-file limit to the hard limit: every server caps its connections
/// (docs/http.md), and the caps are meant to bind before the process runs out of
/// descriptors.
fn raise_file_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: cannot raise the open-file limit: {e}");
    }
}

fn main() -> ExitCode {
    raise_file_limit();
    let cli = commands::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
