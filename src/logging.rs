//! The server's log: `tracing` events written to stderr by `tracing-subscriber`, as text or JSON
//! lines (`[log]`). Spans are part of each line, so a request's `request_id` is on every line
//! written while it is handled (`gateway::request_id`).

use std::io::IsTerminal;

use anyhow::{anyhow, Result};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// The environment variable that overrides `[log] level`.
pub const LEVEL_VARIABLE: &str = "CLEARING_LOG";

/// Installs the process's subscriber (once; a second call changes nothing).
pub fn install(config: &LogConfig) -> Result<()> {
    let level = std::env::var(LEVEL_VARIABLE).unwrap_or_else(|_| config.level.clone());
    let filter = EnvFilter::try_new(&level).map_err(|error| anyhow!("{LEVEL_VARIABLE} or log.level {level:?}: {error}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match config.format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
    if let Err(error) = installed {
        // Already installed (a command that loads the configuration twice): the first one stays.
        tracing::debug!("log subscriber not replaced: {error}");
    }
    Ok(())
}
