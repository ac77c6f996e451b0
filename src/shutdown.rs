//! Signals → cancellation.
//!
//! SIGTERM or SIGINT cancels the [`CancellationToken`] the whole daemon watches; a second one
//! exits at once (what was acknowledged is already durable). SIGHUP runs the reload callback.
//! Signal delivery uses signal-hook's iterator on its own thread, so no handler runs in signal
//! context.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio_util::sync::CancellationToken;

/// Exit code after a second stop signal cut the graceful stop short.
pub const EXIT_FORCED: i32 = 130;

/// Starts the signal thread. `on_reload` runs on SIGHUP.
pub fn install(
    token: CancellationToken,
    on_reload: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("indaba-signals".to_owned())
        .spawn(move || {
            for signal in signals.forever() {
                match signal {
                    SIGHUP => on_reload(),
                    _ if token.is_cancelled() => {
                        tracing::warn!(signal, "second stop signal: exiting now");
                        std::process::exit(EXIT_FORCED);
                    }
                    _ => {
                        tracing::info!(signal, "stop signal received: draining");
                        token.cancel();
                    }
                }
            }
        })?;
    Ok(())
}
