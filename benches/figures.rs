//! `cargo bench`: the same figures as `reincarnate bench envs` and `reincarnate bench updates`,
//! printed as JSON lines (`{"name", "value", "unit"}`).

use std::time::Duration;

fn main() {
    reincarnate::device::configure_cpu_threads(None);
    let budget = Duration::from_secs_f64(0.5);
    let mut figures = reincarnate::bench::bench_envs(budget, None).expect("env benchmark");
    figures.extend(
        reincarnate::bench::bench_updates(budget, &candle_core::Device::Cpu, None)
            .expect("update benchmark"),
    );
    for f in figures {
        println!("{}", serde_json::to_string(&f).expect("figure serialises"));
    }
}
