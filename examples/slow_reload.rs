//! A cluster whose configuration takes a minute to read at each reload (a
//! stuck network file system, a name service that does not answer), to
//! show that the primary does not wait for it: the reload is aborted after
//! 5 s, and workers stay supervised meanwhile. Each worker takes its
//! listener (which makes it ready) and waits to be stopped.
//!
//!     cargo run --example slow_reload -- --workers 2 --listen 127.0.0.1:3000
//!     kill -HUP <primary pid>

use std::time::Duration;

use clap::Parser;
use corral_examples::ExampleArgs;

/// How long reading the configuration takes.
const READ_TAKES: Duration = Duration::from_secs(60);

fn main() -> Result<(), corral::Error> {
    let args = ExampleArgs::parse();
    let again = ExampleArgs::parse();
    args.cluster()
        .on_reload(move || {
            std::thread::sleep(READ_TAKES);
            Ok(again.cluster())
        })
        .run(|mut worker| async move {
            let _listener = worker.listener()?;
            worker.stopped().await;
            Ok(())
        })
}
