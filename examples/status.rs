//! The cluster's status served the way the program likes: the workers
//! answer on the main port (axum), and the primary serves
//! `Primary::status()` as JSON on a second address, `GET /status` (the
//! same data as `corral status --json`).
//!
//!     cargo run --example status -- --workers 2 --listen 127.0.0.1:3000 --status 127.0.0.1:3001
//!     curl 127.0.0.1:3001/status

use axum::response::IntoResponse;
use clap::Parser;
use corral::Primary;
use corral_examples::ExampleArgs;

#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    cluster: ExampleArgs,
    /// Where the primary serves the status (port 0 picks a free one)
    #[arg(long, default_value = "127.0.0.1:0")]
    status: String,
}

fn main() -> Result<(), corral::Error> {
    let args = Args::parse();
    let status_address = args.status.clone();
    args.cluster
        .cluster()
        .primary(move |primary| serve_status(primary, status_address))
        .run(|mut worker| async move {
            let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok\n" }));
            axum::serve(worker.listener()?, app)
                .with_graceful_shutdown(worker.stopped())
                .await?;
            Ok(())
        })
}

/// Runs in the primary, beside the supervisor.
async fn serve_status(primary: Primary, address: String) {
    let listener = match tokio::net::TcpListener::bind(&address).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!("cannot serve the status on {address}: {err}");
            return;
        }
    };
    if let Ok(bound) = listener.local_addr() {
        println!("status on {bound}");
    }
    let primary = std::sync::Arc::new(primary);
    let app = axum::Router::new().route(
        "/status",
        axum::routing::get(move || {
            let primary = primary.clone();
            async move {
                match primary.status().await {
                    Ok(status) => (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        serde_json::to_string(&status).unwrap_or_default(),
                    )
                        .into_response(),
                    Err(err) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, err.to_string())
                        .into_response(),
                }
            }
        }),
    );
    if let Err(err) = axum::serve(listener, app).await {
        tracing::error!("the status server stopped: {err}");
    }
}
