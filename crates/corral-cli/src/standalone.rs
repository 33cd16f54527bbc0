//! `corral demo-worker`: the demo worker alone, without a primary. It binds
//! its own `SO_REUSEPORT` socket, so several of them on one port make the
//! no-cluster baseline that benchmarks compare corral against.

use std::net::SocketAddr;

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};

use crate::args::DemoWorkerArgs;
use crate::demo;

pub fn run(args: DemoWorkerArgs) -> anyhow::Result<()> {
    let threads = args.worker_threads.map(|threads| threads as usize);
    let runtime = corral::cli_support::worker_runtime(threads).context("cannot start a runtime")?;
    runtime.block_on(async {
        let mut listeners = Vec::new();
        for text in &args.listen {
            let address = text.parse::<corral::ListenAddr>()?.resolve()?;
            let socket =
                bind_reuseport(address).with_context(|| format!("cannot listen on {address}"))?;
            println!("listening on {}", socket.local_addr()?);
            listeners.push(corral::Listener::from_tokio(socket));
        }
        let stopped = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let terminated = async {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
            }
        };
        let stop = async {
            tokio::select! {
                _ = stopped => {}
                _ = terminated => {}
            }
        };
        demo::serve(args.id, listeners, None, stop).await
    })
}

fn bind_reuseport(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(corral::DEFAULT_BACKLOG as i32)?;
    tokio::net::TcpListener::from_std(socket.into())
}
