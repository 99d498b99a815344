//! Printing for the one-shot commands (`saga list`, `region certs`, `plan`, ...): a reader
//! that went away (`geosaga saga list | head`) ends the command quietly with exit status
//! [`CLOSED_STDOUT`], where `println!` would panic with "failed printing to stdout".
//!
//! The process keeps Rust's ignored SIGPIPE: servers (`serve`, `dev`, `region`) must never
//! die because a peer closed a socket, and a client's own HTTP connection to a coordinator
//! that closed it must fail as an error, not kill the process without a word. So only what
//! goes through [`outln!`](crate::outln) and [`out!`](crate::out) treats a closed stdout as
//! the end.

use std::io::Write;

/// The exit status when stdout was closed: 128 + SIGPIPE, the status a shell reports for
/// `cat` or `grep` stopped the same way. Not 0: a script with `set -o pipefail` sees that
/// the output was cut off (for `saga start --wait`, before the saga's outcome was known),
/// and it differs from every exit status the CLI documents.
pub const CLOSED_STDOUT: i32 = 141;

/// Writes `args` to stdout and flushes; a closed stdout exits with [`CLOSED_STDOUT`], any
/// other write error with 1 and a message on stderr. Use [`outln!`](crate::outln).
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(args).and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(CLOSED_STDOUT),
        Err(e) => {
            eprintln!("error: writing to stdout: {e}");
            std::process::exit(1);
        }
    }
}

/// `println!` for the one-shot commands: see [the module](crate::output).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for the one-shot commands: see [the module](crate::output).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}
