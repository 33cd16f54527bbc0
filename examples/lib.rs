//! What the corral examples share: their command line. Each example is a
//! whole program in one file; this keeps their flags the same.

use clap::Parser;

/// The flags every example takes.
#[derive(Debug, Parser)]
pub struct ExampleArgs {
    /// Worker processes [default: number of CPUs]
    #[arg(short, long)]
    pub workers: Option<usize>,
    /// Address to listen on (port 0 picks a free one)
    #[arg(short, long, default_value = "127.0.0.1:3000")]
    pub listen: String,
    /// Balancing policy: shared, reuseport, round-robin or least-connections
    #[arg(long, default_value = "reuseport")]
    pub policy: corral::Policy,
    /// Seconds a stopping worker may drain
    #[arg(long, default_value_t = 30.0)]
    pub grace: f64,
}

impl ExampleArgs {
    /// A cluster configured from the flags, printing `listening on ADDR`
    /// once bound and logging every lifecycle event.
    pub fn cluster(&self) -> corral::Cluster {
        let mut cluster = corral::Cluster::new()
            .listen(&self.listen)
            .policy(self.policy)
            .grace(std::time::Duration::from_secs_f64(self.grace))
            .on_event(|event| {
                if let corral::Event::Bound { addresses } = event {
                    for address in addresses {
                        println!("listening on {address}");
                    }
                }
            });
        if let Some(workers) = self.workers {
            cluster = cluster.workers(workers);
        }
        cluster
    }
}
