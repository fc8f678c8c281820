//! Schedules for learning rates and other coefficients, as a function of the update step.
//!
//! In TOML a schedule is a plain number (constant) or a table with a `kind`:
//! ```toml
//! lr = 2.5e-4
//! lr = { kind = "linear", start = 1e-4, end = 5e-5, steps = 1_000_000 }      # SimbaV2
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
    /// `start` at step 0, linearly to `end` at step `steps`, `end` afterwards.
    Linear {
        start: f64,
        end: f64,
        steps: u64,
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
        steps: u64,
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

    /// Checks that the steps are consistent (`warmup_steps ≤ total_steps`) and values finite.
    pub fn validate(&self, field: &str) -> Result<()> {
        let finite = match *self {
            Schedule::Constant { value } => value.is_finite(),
            Schedule::Linear { start, end, .. } => start.is_finite() && end.is_finite(),
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
                peak.is_finite() && final_value.is_finite()
            }
        };
        if finite {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "{field}: schedule values must be finite, found {self:?}"
            )))
        }
    }

    /// The value at update step `step` (0-based).
    pub fn value(&self, step: u64) -> f64 {
        match *self {
            Schedule::Constant { value } => value,
            Schedule::Linear { start, end, steps } => {
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
            steps: 100,
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
                steps: 10
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
}
