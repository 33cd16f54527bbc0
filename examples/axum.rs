//! An axum application served by a corral cluster. The router is ordinary
//! axum; corral hands each worker a listener and a stop future, so serving
//! with a graceful drain is one line.
//!
//!     cargo run --release --example axum -- --workers 4 --listen 127.0.0.1:3000

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use clap::Parser;
use corral_examples::ExampleArgs;

fn main() -> Result<(), corral::Error> {
    let args = ExampleArgs::parse();
    args.cluster().run(|mut worker| async move {
        let greeting = format!(
            "Hello from worker {} (pid {})\n",
            worker.id(),
            std::process::id()
        );
        let app = Router::new()
            .route("/", get(move || async move { greeting }))
            .route("/sleep/{ms}", get(sleep));
        axum::serve(worker.listener()?, app)
            .with_graceful_shutdown(worker.stopped())
            .await?;
        Ok(())
    })
}

/// Answers after `ms` milliseconds (at most a minute): a slow request to
/// watch a graceful drain.
async fn sleep(Path(ms): Path<u64>) -> String {
    let pause = Duration::from_millis(ms).min(Duration::from_secs(60));
    tokio::time::sleep(pause).await;
    format!("slept {}ms\n", pause.as_millis())
}
