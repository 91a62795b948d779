//! `pecgate autoconfig dns`: the DNS records that let mail clients find
//! pecgate from an address alone.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum AutoconfigCmd {
    /// Print the DNS records to add for each `[autoconfig] domains` entry:
    /// RFC 6186 SRV records for IMAP and submission, the `autoconfig` and
    /// `autodiscover` names, Outlook's `_autodiscover._tcp` SRV record.
    Dns {
        #[arg(long, short, env = "PECGATE_CONFIG", default_value = "/etc/pecgate/pecgate.toml")]
        config: PathBuf,
    },
}

pub fn run(cmd: AutoconfigCmd) -> anyhow::Result<ExitCode> {
    let AutoconfigCmd::Dns { config } = cmd;
    let cfg = crate::daemon::load_config(&config)?;
    let Some(offer) = super::Offer::from_config(&cfg) else {
        eprintln!("{}: there is no [autoconfig] (domains and host) to print records for", config.display());
        return Ok(ExitCode::from(1));
    };
    print!("{}", super::dns_records(&offer));
    Ok(ExitCode::SUCCESS)
}
