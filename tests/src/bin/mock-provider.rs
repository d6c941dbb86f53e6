//! `mock-provider`: the OpenAI/OpenRouter stand-in as a standalone server (for the demo and
//! for trying the worker by hand). See `tollgate_e2e::mock_provider` for what it answers.

use clap::Parser;
use tollgate_e2e::mock_provider::{MockOptions, MockProvider};

#[derive(Parser)]
#[command(
    name = "mock-provider",
    about = "An OpenAI/OpenRouter-compatible mock for local runs"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8799")]
    listen: String,
    /// Added before every response.
    #[arg(long, default_value_t = 0)]
    base_latency_ms: u64,
    /// Between stream chunks.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Fraction of requests answered 500 or 429.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mock = MockProvider::start_on(
        &args.listen,
        MockOptions {
            base_latency_ms: args.base_latency_ms,
            chunk_delay_ms: args.chunk_delay_ms,
            error_rate: args.error_rate,
            seed: args.seed,
        },
    )
    .await?;
    println!("mock provider on {}", mock.base_url());
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}
