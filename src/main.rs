use clap::Parser;
use mast::node::config::{Cli, Command, ServerConfig};

fn main() {
    let cli = Cli::parse();
    // `mast ctl` is a client: its output is the answer, so no log lines.
    if !matches!(cli.command, Command::Ctl(_) | Command::Restore(_)) {
        init_logging();
    }
    match cli.command {
        Command::Ctl(args) => std::process::exit(mast::ctl::run(args)),
        Command::Restore(args) => std::process::exit(mast::ctl::backup::restore_cli(args)),
        Command::Node(args) => std::process::exit(mast::agent::run_cli(args)),
        Command::Server(args) => {
            let config = match ServerConfig::resolve(args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("mast: {e}");
                    std::process::exit(2);
                }
            };
            if let Err(e) = mast::node::server::run(config) {
                eprintln!("mast: {e}");
                std::process::exit(1);
            }
        }
    }
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
