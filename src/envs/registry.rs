//! The table of registered environments. `reincarnate envs` prints it; [`super::TaskFamily`]
//! looks ids up here.

use super::{bandit, classic, gridworld, minatar, shuffled_split, Env, EnvConfig};
use crate::error::{did_you_mean, Error, Result};

/// Splits `n` tasks into (train, test) index lists.
pub type SplitFn = fn(&EnvConfig, usize) -> (Vec<usize>, Vec<usize>);

/// One registered environment id.
pub struct EnvEntry {
    pub id: &'static str,
    pub summary: &'static str,
    /// Options of [`EnvConfig`] (besides `max_episode_steps`) that apply to this env.
    pub options: &'static [&'static str],
    pub num_tasks: fn(&EnvConfig) -> usize,
    /// (train, test) task indices.
    pub split: SplitFn,
    pub make: fn(&EnvConfig, usize) -> Result<Box<dyn Env>>,
    pub describe: fn(&EnvConfig, usize) -> serde_json::Value,
}

const GRID_OPTIONS: &[&str] = &["test_fraction", "split_seed", "size"];
const KEY_TO_DOOR_OPTIONS: &[&str] = &["test_fraction", "split_seed", "observe_key", "size"];
const BANDIT_OPTIONS: &[&str] = &["num_tasks", "split_seed", "test_fraction"];
const MINATAR_OPTIONS: &[&str] = &["sticky_action_prob", "difficulty_ramping"];

fn one_task(_: &EnvConfig) -> usize {
    1
}
fn single_split(_: &EnvConfig, _: usize) -> (Vec<usize>, Vec<usize>) {
    (vec![0], vec![0])
}
fn no_description(_: &EnvConfig, _: usize) -> serde_json::Value {
    serde_json::json!({})
}
/// The room side of a gridworld: `env.size` (range-checked by `TaskFamily::new`, through which
/// every environment is made), or `default`.
fn side(cfg: &EnvConfig, default: usize) -> usize {
    cfg.size.unwrap_or(default)
}

/// Gridworld split: 20% of the tasks held out by default, as the AD paper holds out goals.
fn grid_split(cfg: &EnvConfig, n: usize) -> (Vec<usize>, Vec<usize>) {
    shuffled_split(
        n,
        cfg.test_fraction.unwrap_or(0.2),
        cfg.split_seed.unwrap_or(0),
    )
}

macro_rules! minatar_entry {
    ($id:literal, $game:expr, $summary:literal) => {
        EnvEntry {
            id: $id,
            summary: $summary,
            options: MINATAR_OPTIONS,
            num_tasks: one_task,
            split: single_split,
            make: |cfg, _| minatar::make($game, cfg),
            describe: no_description,
        }
    };
}

static REGISTRY: &[EnvEntry] = &[
    EnvEntry {
        id: "dark_room",
        summary: "9x9 dark room, observe (x, y), 5 actions, horizon 20, reward 1 each step on the invisible goal; 81 goals",
        options: GRID_OPTIONS,
        num_tasks: |cfg| gridworld::DarkRoom::num_goals(side(cfg, 9)),
        split: grid_split,
        make: |cfg, task| Ok(Box::new(gridworld::DarkRoom::new(side(cfg, 9), 20, false, task, cfg.max_episode_steps))),
        describe: |cfg, task| gridworld::DarkRoom::describe(side(cfg, 9), task),
    },
    EnvEntry {
        id: "dark_room_hard",
        summary: "17x17 dark room, horizon 20, reward 1 once on reaching the goal (episode ends); 289 goals",
        options: GRID_OPTIONS,
        num_tasks: |cfg| gridworld::DarkRoom::num_goals(side(cfg, 17)),
        split: grid_split,
        make: |cfg, task| Ok(Box::new(gridworld::DarkRoom::new(side(cfg, 17), 20, true, task, cfg.max_episode_steps))),
        describe: |cfg, task| gridworld::DarkRoom::describe(side(cfg, 17), task),
    },
    EnvEntry {
        id: "dark_key_to_door",
        summary: "9x9, observe (x, y) [+ has-key flag with observe_key], invisible key (+1) then door (+1, ends), random start, horizon 50; 81x81 tasks",
        options: KEY_TO_DOOR_OPTIONS,
        num_tasks: |cfg| gridworld::DarkKeyToDoor::num_tasks(side(cfg, 9)),
        split: grid_split,
        make: |cfg, task| {
            Ok(Box::new(gridworld::DarkKeyToDoor::new(
                side(cfg, 9),
                task,
                cfg.max_episode_steps,
                cfg.observe_key.unwrap_or(false),
            )))
        },
        describe: |cfg, task| gridworld::DarkKeyToDoor::describe(side(cfg, 9), task),
    },
    EnvEntry {
        id: "bandit",
        summary: "10-armed Bernoulli, 100 pulls; adversarial split: train tasks favour odd arms 95% of the time, test tasks even arms",
        options: BANDIT_OPTIONS,
        num_tasks: bandit::num_tasks,
        split: bandit::adversarial_split,
        make: |cfg, task| Ok(Box::new(bandit::Bandit::adversarial(cfg, task))),
        describe: |cfg, task| bandit::Bandit::adversarial(cfg, task).describe(),
    },
    EnvEntry {
        id: "bandit/uniform",
        summary: "10-armed Bernoulli, 100 pulls, arm means uniform in [0, 1]; random split",
        options: BANDIT_OPTIONS,
        num_tasks: bandit::num_tasks,
        split: |cfg, n| shuffled_split(n, cfg.test_fraction.unwrap_or(0.2), cfg.split_seed.unwrap_or(0)),
        make: |cfg, task| Ok(Box::new(bandit::Bandit::uniform(cfg, task))),
        describe: |cfg, task| bandit::Bandit::uniform(cfg, task).describe(),
    },
    EnvEntry {
        id: "cartpole",
        summary: "Gymnasium CartPole-v1: balance a pole, 2 actions, +1 per step, 500-step limit",
        options: &[],
        num_tasks: one_task,
        split: single_split,
        make: |cfg, _| Ok(Box::new(classic::CartPole::new(cfg.max_episode_steps))),
        describe: no_description,
    },
    EnvEntry {
        id: "pendulum",
        summary: "Gymnasium Pendulum-v1: swing up, torque in [-2, 2], 200-step limit",
        options: &[],
        num_tasks: one_task,
        split: single_split,
        make: |cfg, _| Ok(Box::new(classic::Pendulum::new(cfg.max_episode_steps))),
        describe: no_description,
    },
    EnvEntry {
        id: "mountain_car_continuous",
        summary: "Gymnasium MountainCarContinuous-v0: force in [-1, 1], +100 at the flag, 999-step limit",
        options: &[],
        num_tasks: one_task,
        split: single_split,
        make: |cfg, _| Ok(Box::new(classic::MountainCarContinuous::new(cfg.max_episode_steps))),
        describe: no_description,
    },
    minatar_entry!("minatar/asterix", minatar::Game::Asterix, "MinAtar Asterix: 10x10x4 boolean, 6 actions, sticky 0.1"),
    minatar_entry!("minatar/breakout", minatar::Game::Breakout, "MinAtar Breakout: 10x10x4 boolean, 6 actions, sticky 0.1"),
    minatar_entry!("minatar/freeway", minatar::Game::Freeway, "MinAtar Freeway: 10x10x7 boolean, 6 actions, sticky 0.1"),
    minatar_entry!("minatar/seaquest", minatar::Game::Seaquest, "MinAtar Seaquest: 10x10x10 boolean, 6 actions, sticky 0.1"),
    minatar_entry!("minatar/space_invaders", minatar::Game::SpaceInvaders, "MinAtar Space Invaders: 10x10x6 boolean, 6 actions, sticky 0.1"),
];

/// All registered environments, in display order.
pub fn registry() -> &'static [EnvEntry] {
    REGISTRY
}

/// Every `gym:ID`: a Gymnasium environment through the bridge (feature `gym`).
static GYM: EnvEntry = EnvEntry {
    id: "gym:ID",
    summary: "any Gymnasium environment (gym:Hopper-v5, gym:ALE/Breakout-v5, gym:module:factory) through the Python bridge; needs the `gym` feature",
    options: &["kwargs", "preset", "num_envs"],
    num_tasks: one_task,
    split: single_split,
    make: super::gym::make,
    describe: super::gym::describe,
};

/// The entry for `id`, or an error listing every valid id and the nearest one.
pub fn lookup(id: &str) -> Result<&'static EnvEntry> {
    if id.starts_with(super::gym::PREFIX) {
        return Ok(&GYM);
    }
    REGISTRY.iter().find(|e| e.id == id).ok_or_else(|| {
        let ids: Vec<&str> = REGISTRY.iter().map(|e| e.id).collect();
        Error::Env(format!(
            "unknown environment `{id}`{}; valid environments: {}, or gym:ID for a Gymnasium environment",
            did_you_mean(id, ids.iter().copied()),
            ids.join(", ")
        ))
    })
}

/// `reincarnate envs`: every registered environment with its spaces, horizon and task counts,
/// as a table or (`json`) as one JSON array.
pub fn describe_registry(json: bool) -> Result<String> {
    use super::{TaskFamily, TaskSet};
    let mut rows = Vec::new();
    let mut objs = Vec::new();
    for e in registry() {
        let fam = TaskFamily::from_id(e.id)?;
        let spec = fam.spec();
        let (train, test) = (
            fam.tasks(TaskSet::Train).len(),
            fam.tasks(TaskSet::Test).len(),
        );
        rows.push(vec![
            e.id.to_string(),
            spec.observation_space.to_string(),
            spec.action_space.to_string(),
            spec.max_episode_steps.to_string(),
            format!("{} ({train}/{test})", spec.num_tasks),
            e.summary.to_string(),
        ]);
        objs.push(serde_json::json!({
            "id": e.id, "spec": spec, "train_tasks": train, "test_tasks": test, "summary": e.summary,
        }));
    }
    if json {
        objs.push(super::gym::registry_entry());
        return serde_json::to_string(&objs)
            .map(|s| s + "\n")
            .map_err(|e| Error::Env(format!("the environment list does not serialise: {e}")));
    }
    let bridge = if cfg!(feature = "gym") {
        "this binary has the bridge; the packages come from .venv/ (scripts/python-env.sh)"
    } else {
        "this binary was built without it: cargo build --release --features gym"
    };
    Ok(format!(
        "{}\ngym:ID  any Gymnasium environment (gym:Hopper-v5, gym:ALE/Breakout-v5, gym:module:factory) through the Python bridge; {bridge}\n",
        crate::report::table(
            &[
                "env",
                "observation",
                "action",
                "horizon",
                "tasks (train/test)",
                "description"
            ],
            &rows
        )
    ))
}
