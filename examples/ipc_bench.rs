//! Measures messages between the primary and one worker over corral's
//! channel: ping-pong round trips per second (one message in flight),
//! pipelined round trips per second (100 in flight), and the round-trip time
//! of 1 MiB and 16 MiB payloads. The worker echoes every message back.
//! Prints one JSON object; `bench/messages.py` runs it beside Node's
//! `process.send` and a bare socket pair.
//!
//! With `--typed` both ends send a struct (no `serde_json::Value` built to
//! send) and parse each message straight into it (`Messages::recv_as` in
//! the worker, `Primary::next_event_as` in the primary); without, messages
//! are `Value`s both ways.
//!
//!     cargo run --release --example ipc_bench -- --seconds 2 [--typed]

use std::time::{Duration, Instant};

use clap::Parser;
use corral::{Cluster, Event, EventAs, Primary, Worker, WorkerResult};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// Seconds each throughput measurement runs
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Round trips averaged for each large payload
    #[arg(long, default_value_t = 5)]
    large_rounds: u32,
    /// Threads of the worker's runtime (1: current-thread)
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Typed messages: structs sent, parsed straight into the struct
    #[arg(long)]
    typed: bool,
}

/// The message of `--typed`: `{"seq":N}` as in the untyped runs, or a
/// large payload beside it.
#[derive(Debug, Serialize, Deserialize)]
struct Probe {
    seq: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    payload: String,
}

fn main() -> Result<(), corral::Error> {
    let args = Args::parse();
    let period = Duration::from_secs_f64(args.seconds);
    let rounds = args.large_rounds;
    let typed = args.typed;
    let mut cluster = Cluster::new();
    if let Some(threads) = args.worker_threads {
        cluster = cluster.worker_threads(threads);
    }
    cluster
        .workers(1)
        .max_message_size(64 * 1024 * 1024)
        .primary(move |primary| measure(primary, period, rounds, typed))
        .run(move |worker| async move {
            if typed {
                echo_typed(worker).await
            } else {
                echo(worker).await
            }
        })
}

/// The worker of `--typed`: parse every message into a [`Probe`] and send
/// it back.
async fn echo_typed(mut worker: Worker) -> WorkerResult {
    let mut messages = worker.messages().expect("taken once, here");
    worker.ready();
    let stopped = worker.stopped();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            received = messages.recv_as::<Probe>() => match received {
                Some(received) => worker.send(&received.message?).await?,
                None => return Ok(()),
            },
            _ = &mut stopped => return Ok(()),
        }
    }
}

/// The worker: send every message straight back, until asked to stop.
async fn echo(mut worker: Worker) -> WorkerResult {
    let mut messages = worker.messages().expect("taken once, here");
    worker.ready();
    let stopped = worker.stopped();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            received = messages.recv() => match received {
                Some(received) => worker.send(&received.message).await?,
                None => return Ok(()),
            },
            _ = &mut stopped => return Ok(()),
        }
    }
}

async fn measure(mut primary: Primary, period: Duration, large_rounds: u32, typed: bool) {
    wait_until_ready(&mut primary).await;
    let ping_pong = round_trips_per_second(&mut primary, period, 1, typed).await;
    let pipelined = round_trips_per_second(&mut primary, period, 100, typed).await;
    let one_mib = round_trip_ms(&mut primary, 1 << 20, large_rounds, typed).await;
    let sixteen_mib = round_trip_ms(&mut primary, 16 << 20, large_rounds, typed).await;
    let result = json!({
        "ping_pong_round_trips_per_s": ping_pong,
        "pipelined_round_trips_per_s": pipelined,
        "rtt_1mib_ms": one_mib,
        "rtt_16mib_ms": sixteen_mib,
    });
    println!("{result}");
    primary.stop();
}

async fn wait_until_ready(primary: &mut Primary) {
    while let Some(event) = primary.next_event().await {
        if matches!(event, Event::Ready { id: 1, .. }) {
            return;
        }
    }
}

/// Sends `{"seq":seq}`: a struct when `typed`, else a `Value`.
fn send_seq(primary: &Primary, seq: u64, typed: bool) {
    if typed {
        send(
            primary,
            &Probe {
                seq,
                payload: String::new(),
            },
        );
    } else {
        send(primary, &json!({ "seq": seq }));
    }
}

/// Keeps `in_flight` small messages going for `period`.
async fn round_trips_per_second(
    primary: &mut Primary,
    period: Duration,
    in_flight: u64,
    typed: bool,
) -> f64 {
    let started = Instant::now();
    let mut sent = 0u64;
    let mut answered = 0u64;
    while sent < in_flight {
        send_seq(primary, sent, typed);
        sent += 1;
    }
    while started.elapsed() < period {
        next_message(primary, typed).await;
        answered += 1;
        send_seq(primary, sent, typed);
        sent += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    while answered < sent {
        next_message(primary, typed).await;
        answered += 1;
    }
    (sent - in_flight) as f64 / elapsed
}

/// The mean round-trip time of a `bytes`-long string payload, in ms.
async fn round_trip_ms(primary: &mut Primary, bytes: usize, rounds: u32, typed: bool) -> f64 {
    let payload = "x".repeat(bytes);
    let probe = Probe {
        seq: 0,
        payload: payload.clone(),
    };
    let value = Value::String(payload);
    let started = Instant::now();
    for _ in 0..rounds {
        if typed {
            send(primary, &probe);
        } else {
            send(primary, &value);
        }
        next_message(primary, typed).await;
    }
    started.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds)
}

fn send<T: Serialize>(primary: &Primary, message: &T) {
    primary.send(1, message).expect("the worker takes messages");
}

/// Waits for the worker's next message: a [`Probe`] when `typed`, else a
/// `Value`.
async fn next_message(primary: &mut Primary, typed: bool) {
    if typed {
        while let Some(event) = primary.next_event_as::<Probe>().await {
            if let EventAs::Message { message, .. } = event {
                message.expect("the worker echoes probes");
                return;
            }
        }
    } else {
        while let Some(event) = primary.next_event().await {
            if let Event::Message { .. } = event {
                return;
            }
        }
    }
    panic!("the cluster stopped during the measurement");
}
