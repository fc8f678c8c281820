//! The "dark" gridworlds of Algorithm Distillation (Laskin et al. 2023, §5): the agent observes
//! only its own (x, y) position; the goal (and key) are invisible, so a policy must explore
//! and remember across episodes to find them.
//!
//! Actions: 0 left (x − 1), 1 right (x + 1), 2 up (y − 1), 3 down (y + 1), 4 no-op; moves into a
//! wall leave the agent in place. Rewards are computed on the position *after* the move.

use super::{discrete_action, Action, Bounds, Env, Space, Step};
use crate::error::{Error, Result};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

pub(crate) const MOVES: [(i32, i32); 5] = [(-1, 0), (1, 0), (0, -1), (0, 1), (0, 0)];

fn grid_obs_space(size: usize) -> Space {
    Space::Box {
        shape: vec![2],
        low: Bounds::Scalar(0.0),
        high: Bounds::Scalar((size - 1) as f32),
    }
}

#[inline]
/// Errors unless every cell is on a `size × size` grid.
fn on_grid(size: i32, cells: &[(i32, i32)]) -> Result<()> {
    match cells
        .iter()
        .find(|(x, y)| !(0..size).contains(x) || !(0..size).contains(y))
    {
        Some(c) => Err(Error::Env(format!(
            "cell {c:?} is off the {size}×{size} grid"
        ))),
        None => Ok(()),
    }
}

/// Where `action` (0–4: left, right, up, down, stay) takes `pos` in a `size × size` room: the
/// move rule every dark gridworld shares (walls hold the agent in place).
pub(crate) fn apply_move(size: i32, pos: (i32, i32), action: usize) -> (i32, i32) {
    let (dx, dy) = MOVES[action];
    (
        (pos.0 + dx).clamp(0, size - 1),
        (pos.1 + dy).clamp(0, size - 1),
    )
}

#[inline]
fn manhattan(a: (i32, i32), b: (i32, i32)) -> i32 {
    (a.0 - b.0).abs() + (a.1 - b.1).abs()
}

/// Dark Room (`hard = false`: reward 1 on every step spent on the goal) and Dark Room Hard
/// (`hard = true`: reward 1 once, on reaching the goal, which ends the episode). Start at the
/// centre. Task `t` puts the goal at `(t % size, t / size)`.
#[derive(Serialize, Deserialize)]
pub struct DarkRoom {
    size: i32,
    horizon: u32,
    hard: bool,
    goal: (i32, i32),
    pos: (i32, i32),
    t: u32,
    obs_space: Space,
    act_space: Space,
}

impl DarkRoom {
    pub fn new(size: usize, horizon: u32, hard: bool, task: usize, max_steps: Option<u32>) -> Self {
        let s = size as i32;
        Self {
            size: s,
            horizon: max_steps.unwrap_or(horizon),
            hard,
            goal: ((task % size) as i32, (task / size) as i32),
            pos: (s / 2, s / 2),
            t: 0,
            obs_space: grid_obs_space(size),
            act_space: Space::Discrete { n: 5 },
        }
    }

    pub fn num_goals(size: usize) -> usize {
        size * size
    }

    pub fn describe(size: usize, task: usize) -> serde_json::Value {
        serde_json::json!({ "goal": [task % size, task / size] })
    }

    pub fn goal(&self) -> (i32, i32) {
        self.goal
    }
}

impl Env for DarkRoom {
    crate::serde_snapshot!("dark_room", fixed = [size, hard, goal]);

    fn check_state(&self) -> Result<()> {
        on_grid(self.size, &[self.pos])
    }

    fn observation_space(&self) -> &Space {
        &self.obs_space
    }
    fn action_space(&self) -> &Space {
        &self.act_space
    }
    fn max_episode_steps(&self) -> u32 {
        self.horizon
    }

    fn reset(&mut self, _seed: Option<u64>, obs: &mut [f32]) {
        // Deterministic: fixed start, fixed goal; the seed has nothing to randomise.
        self.pos = (self.size / 2, self.size / 2);
        self.t = 0;
        obs[0] = self.pos.0 as f32;
        obs[1] = self.pos.1 as f32;
    }

    fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> Result<Step> {
        let id = if self.hard {
            "dark_room_hard"
        } else {
            "dark_room"
        };
        let a = discrete_action(id, action, 5)?;
        self.pos = apply_move(self.size, self.pos, a);
        self.t += 1;
        let on_goal = self.pos == self.goal;
        obs[0] = self.pos.0 as f32;
        obs[1] = self.pos.1 as f32;
        let terminated = self.hard && on_goal;
        Ok(Step {
            reward: f32::from(u8::from(on_goal)),
            terminated,
            truncated: !terminated && self.t >= self.horizon,
        })
    }

    /// Shortest path: `d` moves to the goal, then reward on every remaining step including the
    /// arrival (`H − d + 1`); `H` if the goal is the start (stay put). Hard variant: 1 if reachable.
    fn optimal_return(&self) -> Option<f64> {
        let start = (self.size / 2, self.size / 2);
        let d = manhattan(start, self.goal) as i64;
        let h = self.horizon as i64;
        let steps_to_goal = d.max(1);
        if steps_to_goal > h {
            return Some(0.0);
        }
        Some(if self.hard {
            1.0
        } else if d == 0 {
            h as f64
        } else {
            (h - d + 1) as f64
        })
    }
}

/// Dark Key-to-Door: 9×9 (or `size` × `size`), random start, an invisible key (+1 the first
/// time the agent stands on it) and an invisible door (+1 when reached holding the key, which
/// ends the episode); maximum return 2, horizon 50. Task `t` = key cell `t % 81`, door cell
/// `t / 81` (cell `c` is `(c % 9, c / 9)`), so there are 81² tasks (size⁴ in general). The
/// observation is the position only, or with `observe_key` the position and a has-key flag
/// (0 or 1).
#[derive(Serialize, Deserialize)]
pub struct DarkKeyToDoor {
    /// Side of the room (snapshots written before the option existed are 9 × 9).
    #[serde(default = "default_ktd_size")]
    size: i32,
    horizon: u32,
    key: (i32, i32),
    door: (i32, i32),
    pos: (i32, i32),
    start: (i32, i32),
    has_key: bool,
    #[serde(default)]
    observe_key: bool,
    t: u32,
    rng: Rng,
    obs_space: Space,
    act_space: Space,
}

fn default_ktd_size() -> i32 {
    9
}

impl DarkKeyToDoor {
    pub fn new(size: usize, task: usize, max_steps: Option<u32>, observe_key: bool) -> Self {
        let n = size as i32;
        let cells = size * size;
        let obs_space = if observe_key {
            Space::Box {
                shape: vec![3],
                low: Bounds::PerDim(vec![0.0, 0.0, 0.0]),
                high: Bounds::PerDim(vec![(n - 1) as f32, (n - 1) as f32, 1.0]),
            }
        } else {
            grid_obs_space(size)
        };
        let cell = |c: usize| ((c as i32) % n, (c as i32) / n);
        Self {
            size: n,
            horizon: max_steps.unwrap_or(50),
            key: cell(task % cells),
            door: cell(task / cells),
            pos: (0, 0),
            start: (0, 0),
            has_key: false,
            observe_key,
            t: 0,
            rng: Rng::seed_from_u64(task as u64),
            obs_space,
            act_space: Space::Discrete { n: 5 },
        }
    }

    fn write_obs(&self, obs: &mut [f32]) {
        obs[0] = self.pos.0 as f32;
        obs[1] = self.pos.1 as f32;
        if self.observe_key {
            obs[2] = f32::from(u8::from(self.has_key));
        }
    }

    pub fn num_tasks(size: usize) -> usize {
        size.pow(4)
    }

    pub fn describe(size: usize, task: usize) -> serde_json::Value {
        let cells = size * size;
        let (k, d) = (task % cells, task / cells);
        serde_json::json!({ "key": [k % size, k / size], "door": [d % size, d / size] })
    }
}

impl Env for DarkKeyToDoor {
    crate::serde_snapshot!("dark_key_to_door", fixed = [size, key, door, observe_key]);

    fn check_state(&self) -> Result<()> {
        on_grid(self.size, &[self.pos, self.start])
    }

    fn observation_space(&self) -> &Space {
        &self.obs_space
    }
    fn action_space(&self) -> &Space {
        &self.act_space
    }
    fn max_episode_steps(&self) -> u32 {
        self.horizon
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
        if let Some(s) = seed {
            self.rng = Rng::seed_from_u64(s);
        }
        let c = self.rng.below((self.size * self.size) as usize) as i32;
        self.start = (c % self.size, c / self.size);
        self.pos = self.start;
        self.has_key = false;
        self.t = 0;
        self.write_obs(obs);
    }

    fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> Result<Step> {
        let a = discrete_action("dark_key_to_door", action, 5)?;
        self.pos = apply_move(self.size, self.pos, a);
        self.t += 1;
        let mut reward = 0.0;
        let mut terminated = false;
        if !self.has_key && self.pos == self.key {
            self.has_key = true;
            reward = 1.0;
        } else if self.has_key && self.pos == self.door {
            reward = 1.0;
            terminated = true;
        }
        self.write_obs(obs);
        Ok(Step {
            reward,
            terminated,
            truncated: !terminated && self.t >= self.horizon,
        })
    }

    /// From this episode's start: each pick-up or arrival takes at least one step.
    fn optimal_return(&self) -> Option<f64> {
        let to_key = manhattan(self.start, self.key).max(1) as u32;
        let to_door = manhattan(self.key, self.door).max(1) as u32;
        Some(if to_key + to_door <= self.horizon {
            2.0
        } else if to_key <= self.horizon {
            1.0
        } else {
            0.0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(env: &mut dyn Env, actions: &[usize]) -> (f32, Vec<Step>, Vec<f32>) {
        let mut obs = vec![0.0; 2];
        env.reset(Some(0), &mut obs);
        let mut total = 0.0;
        let mut steps = Vec::new();
        for &a in actions {
            let s = env.step(Action::Discrete(a), &mut obs).unwrap();
            total += s.reward;
            steps.push(s);
            if s.done() {
                break;
            }
        }
        (total, steps, obs)
    }

    #[test]
    fn dark_room_rewards_every_step_on_goal_and_truncates_at_20() {
        // goal (6, 4): two steps right from the centre (4, 4)
        let task = 4 * 9 + 6;
        let mut env = DarkRoom::new(9, 20, false, task, None);
        let mut acts = vec![1, 1];
        acts.extend(std::iter::repeat_n(4, 30));
        let (ret, steps, obs) = run(&mut env, &acts);
        assert_eq!(steps.len(), 20);
        assert!(steps[19].truncated && !steps[19].terminated);
        assert_eq!(ret, 19.0); // rewarded from step 2 through step 20
        assert_eq!(ret as f64, env.optimal_return().unwrap());
        assert_eq!(obs, vec![6.0, 4.0]);
    }

    #[test]
    fn dark_room_walls_and_goal_at_start() {
        let mut env = DarkRoom::new(9, 20, false, 0, None); // goal (0, 0)
        let mut acts = vec![0; 6]; // 4 lefts reach the wall, 2 more stay
        acts.extend(vec![2; 20]);
        let (ret, _, obs) = run(&mut env, &acts);
        assert_eq!(obs, vec![0.0, 0.0]);
        // d = 8: optimal is 13; this path wastes 2 steps against the wall
        assert_eq!(env.optimal_return(), Some(13.0));
        assert_eq!(ret, 11.0);
        let centre = DarkRoom::new(9, 20, false, 4 * 9 + 4, None);
        assert_eq!(centre.optimal_return(), Some(20.0));
    }

    #[test]
    fn dark_room_average_optimal_return_is_about_16() {
        let mean: f64 = (0..81)
            .map(|t| {
                DarkRoom::new(9, 20, false, t, None)
                    .optimal_return()
                    .unwrap()
            })
            .sum::<f64>()
            / 81.0;
        // 80 goals at distance d >= 1 earn 21 - d (distances sum to 360), the centre earns 20
        assert!((mean - 1340.0 / 81.0).abs() < 1e-9, "{mean}");
    }

    #[test]
    fn dark_room_hard_rewards_once_and_terminates() {
        let task = 8 * 17 + 10; // goal (10, 8), centre (8, 8)
        let mut env = DarkRoom::new(17, 20, true, task, None);
        let (ret, steps, _) = run(&mut env, &[1, 1, 4, 4]);
        assert_eq!(ret, 1.0);
        assert_eq!(steps.len(), 2);
        assert!(steps[1].terminated);
    }

    #[test]
    fn key_to_door_needs_key_first_and_ends_at_door() {
        // key at cell 0 = (0, 0), door at cell 8 = (8, 0)
        let task = 8 * 81;
        let mut env = DarkKeyToDoor::new(9, task, None, false);
        let mut obs = vec![0.0; 2];
        env.reset(Some(3), &mut obs);
        let (sx, sy) = (obs[0] as i32, obs[1] as i32);
        let mut total = 0.0;
        // walk to the door first: no reward without the key (unless the path crosses the key)
        for _ in 0..sy {
            total += env.step(Action::Discrete(2), &mut obs).unwrap().reward;
        }
        for _ in sx..8 {
            total += env.step(Action::Discrete(1), &mut obs).unwrap().reward;
        }
        assert_eq!(total, 0.0);
        // now fetch the key at (0, 0), then return to the door
        for _ in 0..8 {
            total += env.step(Action::Discrete(0), &mut obs).unwrap().reward;
        }
        assert_eq!(total, 1.0);
        let mut last = Step::default();
        for _ in 0..8 {
            last = env.step(Action::Discrete(1), &mut obs).unwrap();
            total += last.reward;
        }
        assert_eq!(total, 2.0);
        assert!(last.terminated);
        assert_eq!(env.optimal_return(), Some(2.0));
    }

    #[test]
    fn key_to_door_flag_shows_the_key_only_with_observe_key() {
        // key at (0, 0), door at (8, 8): walk left then up, onto the key
        let task = 80 * 81;
        let mut env = DarkKeyToDoor::new(9, task, None, true);
        assert_eq!(env.observation_space().flat_dim(), 3);
        let mut obs = vec![0.0; 3];
        env.reset(Some(1), &mut obs);
        assert_eq!(obs[2], 0.0);
        let (sx, sy) = (obs[0] as i32, obs[1] as i32);
        let mut total = 0.0;
        for _ in 0..sx {
            total += env.step(Action::Discrete(0), &mut obs).unwrap().reward;
        }
        for _ in 0..sy {
            total += env.step(Action::Discrete(2), &mut obs).unwrap().reward;
        }
        assert_eq!((obs[0], obs[1], obs[2], total), (0.0, 0.0, 1.0, 1.0));
        env.reset(Some(1), &mut obs);
        assert_eq!(obs[2], 0.0, "the flag is cleared on reset");
        assert_eq!(
            DarkKeyToDoor::new(9, task, None, false)
                .observation_space()
                .flat_dim(),
            2
        );
    }

    #[test]
    fn key_to_door_start_is_random_but_seeded() {
        let mut env = DarkKeyToDoor::new(9, 5, None, false);
        let mut a = vec![0.0; 2];
        let mut starts = std::collections::HashSet::new();
        for s in 0..50 {
            env.reset(Some(s), &mut a);
            starts.insert((a[0] as i32, a[1] as i32));
        }
        assert!(starts.len() > 20);
        let mut b = vec![0.0; 2];
        env.reset(Some(7), &mut a);
        env.reset(Some(7), &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn bad_action_names_env_and_range() {
        let mut env = DarkRoom::new(9, 20, false, 0, None);
        let mut obs = vec![0.0; 2];
        env.reset(None, &mut obs);
        let err = env
            .step(Action::Discrete(5), &mut obs)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dark_room") && err.contains("0..5"), "{err}");
    }
}
