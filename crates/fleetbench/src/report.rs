//! What a scenario reports: figures against targets, the fsync latency it ran with, raw
//! details, notes; and the table printed at the end of a run.

use crate::util::Summary;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One measured figure.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Figure {
    /// What was measured.
    pub what: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// The target, as text (`≤ 5`, `≥ 20000`), if there is one.
    pub target: Option<String>,
    /// Whether the target is met.
    pub met: Option<bool>,
}

impl Figure {
    /// A figure without a target.
    pub fn info(what: &str, value: f64, unit: &str) -> Self {
        Self {
            what: what.into(),
            value,
            unit: unit.into(),
            target: None,
            met: None,
        }
    }

    /// A figure that must be at most `max`.
    pub fn at_most(what: &str, value: f64, unit: &str, max: f64) -> Self {
        Self {
            target: Some(format!("≤ {}", num(max))),
            met: Some(value <= max),
            ..Self::info(what, value, unit)
        }
    }

    /// A figure that must be at least `min`.
    pub fn at_least(what: &str, value: f64, unit: &str, min: f64) -> Self {
        Self {
            target: Some(format!("≥ {}", num(min))),
            met: Some(value >= min),
            ..Self::info(what, value, unit)
        }
    }
}

/// A scenario's outcome.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Outcome {
    /// Scenario name.
    pub scenario: String,
    /// `fdatasync` latency (ms) measured in the scenario's environment.
    pub fsync_ms: Summary,
    /// Whether the fsync shim was preloaded (hub and simulated nodes).
    pub fsync_shim: bool,
    /// The figures.
    pub figures: Vec<Figure>,
    /// Raw measurements.
    pub details: Value,
    /// Caveats.
    pub notes: Vec<String>,
    /// CPU used on the machine by processes other than this scenario's, on average
    /// during it, in cores (other work on a shared machine disturbs the figures).
    #[serde(default)]
    pub other_load_cores: Option<f64>,
}

/// A number for people: no trailing zeros, thousands kept readable.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The table of every figure (Markdown, so it can go into docs as is).
pub fn table(outcomes: &[Outcome]) -> String {
    let mut t = String::from(
        "| scenario | figure | measured | target | met | fsync p50 | other load |\n|---|---|---:|---|---|---:|---:|\n",
    );
    for o in outcomes {
        let fsync = format!(
            "{} ms{}",
            num(o.fsync_ms.p50),
            if o.fsync_shim { " (shim)" } else { "" }
        );
        for f in &o.figures {
            t += &format!(
                "| {} | {} | {} {} | {} | {} | {} | {} |\n",
                o.scenario,
                f.what,
                num(f.value),
                f.unit,
                f.target
                    .clone()
                    .map(|s| format!("{s} {}", f.unit))
                    .unwrap_or_default(),
                match f.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "",
                },
                fsync,
                o.other_load_cores
                    .map(|c| format!("{c:.2} cores"))
                    .unwrap_or_default()
            );
        }
    }
    t
}
