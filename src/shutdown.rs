//! Signals → cancellation, and the service manager told about each change of state.
//!
//! SIGTERM or SIGINT cancels the [`CancellationToken`] the whole daemon watches; a second one
//! exits at once (what was acknowledged is already durable). SIGHUP runs the reload callback.
//! Signal delivery uses signal-hook's iterator on its own thread, so no handler runs in signal
//! context.
//!
//! Under systemd (`Type=notify-reload`) [`notify`] sends `READY=1` once the daemon serves,
//! `RELOADING=1` with `MONOTONIC_USEC` and then `READY=1` around a SIGHUP reload, and
//! `STOPPING=1` when a stop begins. Without `NOTIFY_SOCKET` in the environment it does nothing.

use std::sync::atomic::{AtomicBool, Ordering};

use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio_util::sync::CancellationToken;

/// Exit code after a second stop signal cut the graceful stop short.
pub const EXIT_FORCED: i32 = 130;

/// Set once `READY=1` was sent: a SIGHUP before that (the daemon still starting) must not
/// announce readiness early, so the reload sends neither `RELOADING=1` nor `READY=1`.
static READY: AtomicBool = AtomicBool::new(false);

/// A state the service manager is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    /// The listener is bound and the store is open: connections are served.
    Ready,
    /// A SIGHUP reload is under way; `MONOTONIC_USEC` goes with it, as `Type=notify-reload`
    /// requires (systemd 253+ fails the reload without it).
    Reloading,
    /// A graceful stop has begun.
    Stopping,
}

/// Tells the service manager (systemd's `NOTIFY_SOCKET`) about `state`; a no-op without one.
///
/// A failure is logged, not returned: the daemon serves the same with or without a supervisor
/// listening, and systemd itself notices a missing `READY=1` by its start timeout.
pub fn notify(state: ServiceState) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let sent = match state {
        ServiceState::Ready => sd_notify::notify(&[NotifyState::Ready]),
        ServiceState::Reloading => NotifyState::monotonic_usec_now()
            .and_then(|now| sd_notify::notify(&[NotifyState::Reloading, now])),
        ServiceState::Stopping => sd_notify::notify(&[NotifyState::Stopping]),
    };
    match sent {
        Ok(()) => {
            if state == ServiceState::Ready {
                READY.store(true, Ordering::SeqCst);
            }
            tracing::debug!(?state, "service manager notified");
        }
        Err(e) => tracing::warn!(?state, error = %e, "cannot notify the service manager"),
    }
}

/// Starts the signal thread. `on_reload` runs on SIGHUP.
pub fn install(
    token: CancellationToken,
    on_reload: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("indaba-signals".to_owned())
        .spawn(move || {
            // A stop signal seen already: the token alone cannot say, as the daemon also
            // cancels it itself (a failed store writer), and a first signal then must not
            // cut that stop short.
            let mut signalled = false;
            for signal in signals.forever() {
                match signal {
                    SIGHUP => reload(&token, &on_reload),
                    _ if signalled => {
                        tracing::warn!(signal, "second stop signal: exiting now");
                        std::process::exit(EXIT_FORCED);
                    }
                    _ => {
                        tracing::info!(signal, "stop signal received: draining");
                        signalled = true;
                        token.cancel();
                    }
                }
            }
        })?;
    Ok(())
}

/// Runs `on_reload` between `RELOADING=1` and `READY=1`, once the daemon has been ready; a
/// reload during a stop is not followed by `READY=1`, which would contradict `STOPPING=1`.
fn reload(token: &CancellationToken, on_reload: &impl Fn()) {
    let announce = READY.load(Ordering::SeqCst) && !token.is_cancelled();
    if announce {
        notify(ServiceState::Reloading);
    }
    on_reload();
    if announce && !token.is_cancelled() {
        notify(ServiceState::Ready);
    }
}
