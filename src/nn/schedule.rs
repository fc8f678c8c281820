//! Schedules for learning rates and other coefficients, as a function of the update step.
//!
//! In TOML a schedule is a plain number (constant) or a table with a `kind`:
//! ```toml
//! lr = 2.5e-4
//! lr = { kind = "linear", start = 1e-4, end = 5e-5, steps = { fraction = 1.0 } }  # SimbaV2
//! lr = { kind = "warmup_cosine", peak = 3e-4, warmup_steps = 1000,            # AD
//!        total_steps = 100_000, final_value = 0.0 }
//! ```

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A value as a function of the step count.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    Constant {
        value: f64,
    },
    /// `start` at step 0, linearly to `end` at step `steps`, `end` afterwards. `steps` may be
    /// a fraction of the run's updates (`steps = { fraction = 1.0 }`: decay over the whole run).
    Linear {
        start: f64,
        end: f64,
        steps: Steps,
    },
    /// Linear from 0 to `peak` over `warmup_steps`, then half a cosine from `peak` down to
    /// `final_value` at `total_steps`, `final_value` afterwards (the transformer schedule of
    /// Laskin et al. 2023).
    WarmupCosine {
        peak: f64,
        warmup_steps: u64,
        total_steps: u64,
        final_value: f64,
    },
}

/// The table form, with unknown keys refused.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Tagged {
    Constant {
        value: f64,
    },
    Linear {
        start: f64,
        end: f64,
        steps: Steps,
    },
    WarmupCosine {
        peak: f64,
        warmup_steps: u64,
        total_steps: u64,
        #[serde(default)]
        final_value: f64,
    },
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Schedule;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a number or a table with kind = \"constant\", \"linear\" or \"warmup_cosine\"",
                )
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Schedule, E> {
                Ok(Schedule::Constant { value: v })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Schedule, E> {
                Ok(Schedule::Constant { value: v as f64 })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Schedule, E> {
                Ok(Schedule::Constant { value: v as f64 })
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<Schedule, A::Error> {
                let t = Tagged::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(match t {
                    Tagged::Constant { value } => Schedule::Constant { value },
                    Tagged::Linear { start, end, steps } => Schedule::Linear { start, end, steps },
                    Tagged::WarmupCosine {
                        peak,
                        warmup_steps,
                        total_steps,
                        final_value,
                    } => Schedule::WarmupCosine {
                        peak,
                        warmup_steps,
                        total_steps,
                        final_value,
                    },
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Schedule {
    pub fn constant(value: f64) -> Self {
        Schedule::Constant { value }
    }

    /// Checks that the steps are consistent (`warmup_steps ≤ total_steps`) and values finite
    /// and non-negative (every schedule here is a learning rate).
    pub fn validate(&self, field: &str) -> Result<()> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        let finite = match *self {
            Schedule::Constant { value } => ok(value),
            Schedule::Linear { start, end, .. } => ok(start) && ok(end),
            Schedule::WarmupCosine {
                peak,
                final_value,
                warmup_steps,
                total_steps,
            } => {
                if warmup_steps > total_steps {
                    return Err(Error::Config(format!(
                        "{field}: warmup_steps = {warmup_steps} exceeds total_steps = {total_steps}"
                    )));
                }
                ok(peak) && ok(final_value)
            }
        };
        if finite {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "{field}: schedule values must be finite and at least 0, found {self:?}"
            )))
        }
    }

    /// The schedule with a fractional `steps` resolved against `total` updates
    /// ([`Steps::resolve`]).
    pub fn resolve(&self, total: Option<u64>, field: &str) -> Result<Schedule> {
        Ok(match *self {
            Schedule::Linear { start, end, steps } => Schedule::Linear {
                start,
                end,
                steps: steps.resolve(total, &format!("{field}.steps"))?,
            },
            _ => self.clone(),
        })
    }

    /// The value at update step `step` (0-based).
    pub fn value(&self, step: u64) -> f64 {
        match *self {
            Schedule::Constant { value } => value,
            Schedule::Linear { start, end, steps } => {
                let steps = steps.count();
                if step >= steps {
                    end
                } else {
                    start + (end - start) * (step as f64 / steps as f64)
                }
            }
            Schedule::WarmupCosine {
                peak,
                warmup_steps,
                total_steps,
                final_value,
            } => {
                if step < warmup_steps {
                    peak * step as f64 / warmup_steps as f64
                } else if step >= total_steps {
                    final_value
                } else {
                    let span = (total_steps - warmup_steps).max(1) as f64;
                    let progress = (step - warmup_steps) as f64 / span;
                    final_value
                        + 0.5
                            * (peak - final_value)
                            * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
        }
    }
}

/// A number of steps, as a count (`10_000`) or as a fraction of the run's budget
/// (`{ fraction = 0.5 }`, optionally capped: `{ fraction = 0.02, at_most = 10_000 }`), the way
/// CleanRL's `exploration_fraction` and Stable-Baselines3's progress-based schedules scale
/// with `total_timesteps`. An agent resolves every fraction once, when it is built for a run
/// of known length ([`Steps::resolve`]); its saved `config.json` holds the counts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Steps {
    Count(u64),
    Fraction { fraction: f64, at_most: Option<u64> },
}

impl Steps {
    pub const fn fraction(fraction: f64) -> Self {
        Steps::Fraction {
            fraction,
            at_most: None,
        }
    }

    /// The count: itself, or `round(fraction × total)` capped at `at_most`. Without a total
    /// (an agent rebuilt from a checkpoint) a fraction is an error naming `field`.
    pub fn resolve(self, total: Option<u64>, field: &str) -> Result<Steps> {
        match self {
            Steps::Count(_) => Ok(self),
            Steps::Fraction { fraction, at_most } => {
                if !(0.0..=1.0).contains(&fraction) {
                    return Err(Error::Config(format!(
                        "{field}: fraction must be in [0, 1], got {fraction}"
                    )));
                }
                let total = total.ok_or_else(|| {
                    Error::Config(format!(
                        "{field} is a fraction of the run's budget, but no budget is known here; give a step count"
                    ))
                })?;
                let n = (fraction * total as f64).round() as u64;
                Ok(Steps::Count(at_most.map_or(n, |m| n.min(m))))
            }
        }
    }

    /// The count of a resolved value. Agents resolve their configs when built, so a fraction
    /// here is a bug in the agent, not bad input.
    pub fn count(self) -> u64 {
        match self {
            Steps::Count(n) => n,
            Steps::Fraction { .. } => {
                unreachable!(
                    "Steps::count on an unresolved fraction: resolve it when the agent is built"
                )
            }
        }
    }
}

impl From<u64> for Steps {
    fn from(n: u64) -> Self {
        Steps::Count(n)
    }
}

impl Serialize for Steps {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match *self {
            Steps::Count(n) => s.serialize_u64(n),
            Steps::Fraction { fraction, at_most } => {
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("fraction", &fraction)?;
                if let Some(a) = at_most {
                    m.serialize_entry("at_most", &a)?;
                }
                m.end()
            }
        }
    }
}

/// The table form of a fraction, with unknown keys refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FractionTable {
    fraction: f64,
    #[serde(default)]
    at_most: Option<u64>,
}

impl<'de> Deserialize<'de> for Steps {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Steps;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a step count or a fraction of the budget like { fraction = 0.5 }")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Steps, E> {
                Ok(Steps::Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Steps, E> {
                u64::try_from(v)
                    .map(Steps::Count)
                    .map_err(|_| E::custom(format!("a step count must not be negative, got {v}")))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Steps, A::Error> {
                let t = FractionTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if !(0.0..=1.0).contains(&t.fraction) {
                    return Err(de::Error::custom(format!(
                        "fraction must be in [0, 1], got {}",
                        t.fraction
                    )));
                }
                Ok(Steps::Fraction {
                    fraction: t.fraction,
                    at_most: t.at_most,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Cfg {
        lr: Schedule,
    }

    fn parse(s: &str) -> std::result::Result<Schedule, String> {
        toml::from_str::<Cfg>(s)
            .map(|c| c.lr)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn values_at_key_steps() {
        let c = Schedule::constant(0.3);
        assert_eq!(c.value(0), 0.3);
        let l = Schedule::Linear {
            start: 1e-4,
            end: 5e-5,
            steps: Steps::Count(100),
        };
        assert_eq!(l.value(0), 1e-4);
        assert!((l.value(50) - 7.5e-5).abs() < 1e-18);
        assert_eq!(l.value(100), 5e-5);
        assert_eq!(l.value(10_000), 5e-5);
        let w = Schedule::WarmupCosine {
            peak: 1.0,
            warmup_steps: 10,
            total_steps: 110,
            final_value: 0.1,
        };
        assert_eq!(w.value(0), 0.0);
        assert!((w.value(5) - 0.5).abs() < 1e-12);
        assert!((w.value(10) - 1.0).abs() < 1e-12);
        assert!((w.value(60) - 0.55).abs() < 1e-12);
        assert!((w.value(110) - 0.1).abs() < 1e-12);
        assert_eq!(w.value(500), 0.1);
        // monotone after the warm-up
        assert!((10..110).all(|s| w.value(s + 1) <= w.value(s)));
    }

    #[test]
    fn toml_forms_and_errors() {
        assert_eq!(parse("lr = 2.5e-4").unwrap(), Schedule::constant(2.5e-4));
        assert_eq!(parse("lr = 1").unwrap(), Schedule::constant(1.0));
        assert_eq!(
            parse(r#"lr = { kind = "linear", start = 1.0, end = 0.0, steps = 10 }"#).unwrap(),
            Schedule::Linear {
                start: 1.0,
                end: 0.0,
                steps: Steps::Count(10)
            }
        );
        let w = parse(
            r#"lr = { kind = "warmup_cosine", peak = 3e-4, warmup_steps = 5, total_steps = 50 }"#,
        )
        .unwrap();
        assert_eq!(w.value(50), 0.0);
        let e =
            parse(r#"lr = { kind = "linear", start = 1.0, end = 0.0, step = 10 }"#).unwrap_err();
        assert!(e.contains("step"), "{e}");
        let e = parse(r#"lr = { kind = "exp", value = 1.0 }"#).unwrap_err();
        assert!(e.contains("exp"), "{e}");
        assert!(Schedule::WarmupCosine {
            peak: 1.0,
            warmup_steps: 20,
            total_steps: 10,
            final_value: 0.0
        }
        .validate("lr")
        .is_err());
        // round trip through TOML
        let text = toml::to_string(&Cfg2 { lr: w.clone() }).unwrap();
        assert_eq!(parse(&text).unwrap(), w);
    }

    #[derive(Serialize)]
    struct Cfg2 {
        lr: Schedule,
    }

    #[derive(Deserialize, Serialize)]
    struct StepsCfg {
        n: Steps,
    }

    fn steps(s: &str) -> std::result::Result<Steps, String> {
        toml::from_str::<StepsCfg>(s)
            .map(|c| c.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn steps_are_counts_or_fractions_of_the_budget() {
        assert_eq!(steps("n = 500").unwrap(), Steps::Count(500));
        let half = steps("n = { fraction = 0.5 }").unwrap();
        assert_eq!(half, Steps::fraction(0.5));
        // CleanRL's exploration_fraction: half of 100k steps.
        assert_eq!(
            half.resolve(Some(100_000), "x").unwrap(),
            Steps::Count(50_000)
        );
        // Rounded, and capped by at_most.
        let capped = steps("n = { fraction = 0.02, at_most = 10_000 }").unwrap();
        assert_eq!(
            capped.resolve(Some(20_000), "x").unwrap(),
            Steps::Count(400)
        );
        assert_eq!(
            capped.resolve(Some(10_000_000), "x").unwrap(),
            Steps::Count(10_000)
        );
        assert_eq!(
            Steps::fraction(1.0 / 3.0).resolve(Some(10), "x").unwrap(),
            Steps::Count(3)
        );
        // A count is itself with or without a budget.
        assert_eq!(Steps::Count(7).resolve(None, "x").unwrap(), Steps::Count(7));
        // A fraction without a budget, and malformed forms, are errors that say what is wrong.
        let e = half
            .resolve(None, "agent.epsilon.decay_steps")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("agent.epsilon.decay_steps") && e.contains("budget"),
            "{e}"
        );
        assert!(steps("n = { fraction = 1.5 }")
            .unwrap_err()
            .contains("[0, 1]"));
        assert!(steps("n = -3").unwrap_err().contains("negative"));
        assert!(steps("n = { fractoin = 0.5 }")
            .unwrap_err()
            .contains("fractoin"));
        // Round trip through TOML.
        for v in [Steps::Count(9), capped, half] {
            let text = toml::to_string(&StepsCfg { n: v }).unwrap();
            assert_eq!(steps(&text).unwrap(), v, "{text}");
        }
    }

    #[test]
    fn a_linear_schedule_can_span_a_fraction_of_the_run() {
        let lr = parse(
            r#"lr = { kind = "linear", start = 1.0, end = 0.0, steps = { fraction = 1.0 } }"#,
        )
        .unwrap()
        .resolve(Some(200), "agent.lr")
        .unwrap();
        assert_eq!(lr.value(100), 0.5);
        assert_eq!(lr.value(200), 0.0);
    }
}
