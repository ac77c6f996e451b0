//! The table that ends a run of several rounds or servers: every figure per round and server,
//! the medians, and the daemon ÷ ceiling ratio of each round and of the medians. The rounds
//! alternate (daemon, ceiling, daemon, ceiling…), so a ratio compares runs minutes apart on
//! the same machine: on a VM whose speed moves over the day it holds where absolute figures
//! do not.

use super::{Args, Mode, Server};

/// One number a run reports, for the table.
#[derive(Debug, Clone)]
pub(super) struct Figure {
    pub(super) name: &'static str,
    /// `None` when the run could not measure it (no `--pid`, no samples).
    pub(super) value: Option<f64>,
    /// Digits shown after the point.
    pub(super) decimals: usize,
    /// Whether daemon ÷ ceiling means something (not for the machine's steal or iowait).
    pub(super) ratio: bool,
}

impl Figure {
    /// A figure of the server under test, compared between servers.
    pub(super) fn measured(name: &'static str, value: Option<f64>, decimals: usize) -> Figure {
        Figure {
            name,
            value: value.filter(|v| v.is_finite()),
            decimals,
            ratio: true,
        }
    }

    /// A figure of the run's conditions (the machine), shown but not compared.
    pub(super) fn context(name: &'static str, value: Option<f64>, decimals: usize) -> Figure {
        Figure {
            ratio: false,
            ..Figure::measured(name, value, decimals)
        }
    }
}

/// The machine's steal and iowait over a run, as figures.
pub(super) fn machine_figures(
    machine: Option<(super::MachineSample, super::MachineSample)>,
) -> [Figure; 2] {
    let (steal, iowait) = match machine {
        Some((before, after)) => {
            let (steal, iowait) = before.secs_until(&after);
            (Some(steal), Some(iowait))
        }
        None => (None, None),
    };
    [
        Figure::context("machine steal, s", steal, 2),
        Figure::context("machine iowait, s", iowait, 2),
    ]
}

/// The figures of every run, by server and round.
pub(super) struct Comparison {
    workload: String,
    servers: Vec<Server>,
    rounds: usize,
    runs: Vec<(Server, usize, Vec<Figure>)>,
}

impl Comparison {
    pub(super) fn new(args: &Args) -> Comparison {
        let workload = match args.mode {
            Mode::Pairs => match args.rate() {
                Some(rate) => format!("pairs, {} pairs, open loop at {rate} msg/s", args.pairs),
                None => format!("pairs, {} pairs, window {}", args.pairs, args.window),
            },
            Mode::Idle => format!("idle, {} sockets", args.sockets()),
            Mode::Group => format!(
                "group of {} members at {} msg/s",
                args.members,
                args.rate().unwrap_or_default()
            ),
            Mode::Broadcast => format!(
                "broadcast to {} users, {} broadcasts",
                args.sockets(),
                args.broadcasts
            ),
        };
        Comparison {
            workload,
            servers: args.servers.clone(),
            rounds: args.rounds,
            runs: Vec::new(),
        }
    }

    pub(super) fn runs(&self) -> usize {
        self.runs.len()
    }

    pub(super) fn add(&mut self, server: Server, round: usize, figures: Vec<Figure>) {
        self.runs.push((server, round, figures));
    }

    /// The values of figure `name` for `server`, by round (`None` where not measured).
    fn values(&self, server: Server, name: &str) -> Vec<Option<f64>> {
        (0..self.rounds)
            .map(|round| {
                self.runs
                    .iter()
                    .find(|(s, r, _)| *s == server && *r == round)
                    .and_then(|(_, _, figures)| figures.iter().find(|f| f.name == name))
                    .and_then(|f| f.value)
            })
            .collect()
    }

    /// Prints the table, when there is more than one run to set side by side.
    pub(super) fn print(&self) {
        let Some((_, _, first)) = self.runs.first() else {
            return;
        };
        if self.runs.len() < 2 {
            return;
        }
        let order: Vec<&str> = self.servers.iter().map(|s| s.name()).collect();
        println!();
        println!(
            "== {}: {} round(s) alternating {} ==",
            self.workload,
            self.rounds,
            order.join(", ")
        );
        let compare =
            self.servers.contains(&Server::Daemon) && self.servers.contains(&Server::Ceiling);
        if compare {
            println!(
                "ratio = daemon ÷ ceiling, per round; its last column is the ratio of the medians"
            );
        }
        if self.rounds < 3 {
            println!("(fewer than 3 rounds: the medians are not worth quoting)");
        }
        let mut header = format!("{:<28} {:<8}", "figure", "server");
        for round in 1..=self.rounds {
            header.push_str(&format!(" {:>10}", format!("round {round}")));
        }
        header.push_str(&format!(" {:>10}", "median"));
        println!("{header}");
        for figure in first {
            let mut medians = Vec::new();
            for (i, server) in self.servers.iter().enumerate() {
                let values = self.values(*server, figure.name);
                let median = median(&values);
                medians.push((*server, median));
                let name = if i == 0 { figure.name } else { "" };
                let mut line = format!("{name:<28} {:<8}", server.name());
                for value in values.iter().chain([&median]) {
                    line.push_str(&format!(" {:>10}", show(*value, figure.decimals)));
                }
                println!("{line}");
            }
            if compare && figure.ratio {
                let daemon = self.values(Server::Daemon, figure.name);
                let ceiling = self.values(Server::Ceiling, figure.name);
                let of_medians = ratio(
                    medians
                        .iter()
                        .find(|(s, _)| *s == Server::Daemon)
                        .and_then(|(_, m)| *m),
                    medians
                        .iter()
                        .find(|(s, _)| *s == Server::Ceiling)
                        .and_then(|(_, m)| *m),
                );
                let mut line = format!("{:<28} {:<8}", "", "ratio");
                for value in daemon
                    .iter()
                    .zip(&ceiling)
                    .map(|(d, c)| ratio(*d, *c))
                    .chain([of_medians])
                {
                    line.push_str(&format!(" {:>10}", show(value, 2)));
                }
                println!("{line}");
            }
        }
    }
}

fn ratio(daemon: Option<f64>, ceiling: Option<f64>) -> Option<f64> {
    match (daemon, ceiling) {
        (Some(d), Some(c)) if c != 0.0 => Some(d / c),
        _ => None,
    }
}

/// The median of the measured values (the mean of the middle two for an even count).
fn median(values: &[Option<f64>]) -> Option<f64> {
    let mut measured: Vec<f64> = values.iter().flatten().copied().collect();
    if measured.is_empty() {
        return None;
    }
    measured.sort_by(f64::total_cmp);
    let mid = measured.len() / 2;
    Some(if measured.len() % 2 == 1 {
        measured[mid]
    } else {
        (measured[mid - 1] + measured[mid]) / 2.0
    })
}

fn show(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) => format!("{v:.decimals$}"),
        None => "—".into(),
    }
}
