//! MinAtar Freeway. A chicken in column 4 crosses eight lanes of traffic (rows 1–8) from the
//! bottom row to the top; it can move up or down at most once every 3 frames. Reaching row 0
//! gives +1, sends the chicken back to row 9 and re-draws every car's speed and direction. A car
//! hitting the chicken sends it back to row 9 (no penalty). Cars wrap around the screen. The
//! episode ends after 2,500 frames (the 2,501st step is terminal). No difficulty ramping.
//!
//! Channels: 0 chicken, 1 car, 2–6 trail of a car moving every 1–5 frames (behind the car).

use super::{set, Rules, DOWN, UP};
use crate::rng::Rng;

const C: usize = 7;
const PLAYER_SPEED: i32 = 3;
const TIME_LIMIT: i32 = 2500;
const CHICKEN_X: i32 = 4;

/// A car in row `lane + 1`: it moves one cell every `|speed|` frames in the direction of the sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Car {
    x: i32,
    timer: i32,
    speed: i32,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Freeway {
    cars: [Car; 8],
    pos: i32,
    move_timer: i32,
    terminate_timer: i32,
}

impl Freeway {
    pub fn new() -> Self {
        Self {
            cars: [Car {
                x: 0,
                timer: 1,
                speed: 1,
            }; 8],
            pos: 9,
            move_timer: PLAYER_SPEED,
            terminate_timer: TIME_LIMIT,
        }
    }

    /// New speeds (1–5 frames per move) and directions for all cars, keeping their positions
    /// unless `initialize`, which puts them all in column 0.
    fn randomize_cars(&mut self, rng: &mut Rng, initialize: bool) {
        for car in &mut self.cars {
            let period = 1 + rng.below(5) as i32;
            let speed = if rng.uniform() < 0.5 { -period } else { period };
            car.timer = period;
            car.speed = speed;
            if initialize {
                car.x = 0;
            }
        }
    }

    #[inline]
    fn hits(&self, car: &Car, lane: usize) -> bool {
        car.x == CHICKEN_X && lane as i32 + 1 == self.pos
    }
}

impl Default for Freeway {
    fn default() -> Self {
        Self::new()
    }
}

impl Rules for Freeway {
    const ID: &'static str = "minatar/freeway";
    const CHANNELS: usize = C;

    fn reset(&mut self, rng: &mut Rng) {
        self.randomize_cars(rng, true);
        self.pos = 9;
        self.move_timer = PLAYER_SPEED;
        self.terminate_timer = TIME_LIMIT;
    }

    #[inline]
    fn act(&mut self, action: usize, rng: &mut Rng) -> (f32, bool) {
        let mut reward = 0.0;
        if action == UP && self.move_timer == 0 {
            self.move_timer = PLAYER_SPEED;
            self.pos = (self.pos - 1).max(0);
        } else if action == DOWN && self.move_timer == 0 {
            self.move_timer = PLAYER_SPEED;
            self.pos = (self.pos + 1).min(9);
        }

        if self.pos == 0 {
            reward += 1.0;
            self.randomize_cars(rng, false);
            self.pos = 9;
        }

        // Each car, in lane order, hits the chicken where it stands, then moves (on its frames)
        // and may hit it again.
        for lane in 0..self.cars.len() {
            let mut car = self.cars[lane];
            if self.hits(&car, lane) {
                self.pos = 9;
            }
            if car.timer == 0 {
                car.timer = car.speed.abs();
                car.x += car.speed.signum();
                if car.x < 0 {
                    car.x = 9;
                } else if car.x > 9 {
                    car.x = 0;
                }
                if self.hits(&car, lane) {
                    self.pos = 9;
                }
            } else {
                car.timer -= 1;
            }
            self.cars[lane] = car;
        }

        if self.move_timer > 0 {
            self.move_timer -= 1;
        }
        self.terminate_timer -= 1;
        (reward, self.terminate_timer < 0)
    }

    #[inline]
    fn write_obs(&self, obs: &mut [f32]) {
        set::<C>(obs, self.pos as usize, CHICKEN_X as usize, 0);
        for (lane, car) in self.cars.iter().enumerate() {
            let row = lane + 1;
            set::<C>(obs, row, car.x as usize, 1);
            let back = (car.x - car.speed.signum()).rem_euclid(10);
            let trail = 1 + car.speed.unsigned_abs() as usize;
            set::<C>(obs, row, back as usize, trail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{testing, Game, NOOP};
    use super::*;

    /// All cars parked far from the chicken's column, never moving during a short test.
    fn quiet() -> Freeway {
        let mut g = Freeway::new();
        for car in &mut g.cars {
            *car = Car {
                x: 0,
                timer: 1_000,
                speed: 5,
            };
        }
        g
    }

    #[test]
    fn crossing_gives_one_resets_chicken_and_rerolls_cars() {
        let mut rng = Rng::seed_from_u64(0);
        let mut g = quiet();
        g.pos = 1;
        g.move_timer = 0;
        assert_eq!(g.act(UP, &mut rng), (1.0, false));
        assert_eq!(g.pos, 9);
        assert!(g.cars.iter().all(|c| c.x == 0), "positions kept");
        // New periods of 1–5 frames; the timers have already ticked once in this frame.
        assert!(g
            .cars
            .iter()
            .all(|c| (1..=5).contains(&c.speed.abs()) && c.timer == c.speed.abs() - 1));
        assert!(g.cars.iter().any(|c| c.speed != 5), "speeds were re-drawn");
    }

    #[test]
    fn chicken_moves_once_every_three_frames() {
        let mut rng = Rng::seed_from_u64(0);
        let mut g = quiet();
        g.move_timer = 0;
        let mut rows = Vec::new();
        for _ in 0..7 {
            g.act(UP, &mut rng);
            rows.push(g.pos);
        }
        assert_eq!(rows, vec![8, 8, 8, 7, 7, 7, 6]);
        g.act(DOWN, &mut rng);
        assert_eq!(g.pos, 6, "still cooling down");
    }

    #[test]
    fn collision_sends_chicken_back_without_penalty() {
        let mut rng = Rng::seed_from_u64(0);
        let mut g = quiet();
        g.pos = 5;
        g.move_timer = 2;
        // Lane 4 (row 5): a car left of the chicken moving right every frame, due to move now.
        g.cars[4] = Car {
            x: 3,
            timer: 0,
            speed: 1,
        };
        assert_eq!(g.act(NOOP, &mut rng), (0.0, false));
        assert_eq!(g.pos, 9);
        assert_eq!(
            g.cars[4],
            Car {
                x: 4,
                timer: 1,
                speed: 1
            }
        );
    }

    #[test]
    fn cars_wrap_around() {
        let mut rng = Rng::seed_from_u64(0);
        let mut g = quiet();
        g.cars[0] = Car {
            x: 0,
            timer: 0,
            speed: -2,
        };
        g.act(NOOP, &mut rng);
        assert_eq!(
            g.cars[0],
            Car {
                x: 9,
                timer: 2,
                speed: -2
            }
        );
    }

    #[test]
    fn episode_ends_on_step_2501() {
        let mut rng = Rng::seed_from_u64(0);
        let mut g = Freeway::new();
        g.reset(&mut rng);
        for _ in 0..TIME_LIMIT {
            assert!(!g.act(NOOP, &mut rng).1);
        }
        assert!(g.act(NOOP, &mut rng).1);
    }

    #[test]
    fn observation_trails_encode_speed_and_wrap() {
        let mut g = quiet();
        g.cars[0] = Car {
            x: 0,
            timer: 0,
            speed: 3,
        }; // trail wraps to column 9, channel 4
        g.cars[1] = Car {
            x: 9,
            timer: 0,
            speed: -5,
        }; // trail wraps to column 0, channel 6
        g.cars[2] = Car {
            x: 5,
            timer: 0,
            speed: -1,
        }; // trail at column 6, channel 2
        let mut obs = vec![0.0; 700];
        g.write_obs(&mut obs);
        let at = |r: usize, c: usize, ch: usize| obs[(r * 10 + c) * 7 + ch];
        assert_eq!(at(9, 4, 0), 1.0);
        assert_eq!((at(1, 0, 1), at(1, 9, 4)), (1.0, 1.0));
        assert_eq!((at(2, 9, 1), at(2, 0, 6)), (1.0, 1.0));
        assert_eq!((at(3, 5, 1), at(3, 6, 2)), (1.0, 1.0));
        assert_eq!(obs.iter().sum::<f32>(), 17.0);
    }

    #[test]
    fn deterministic_given_seed() {
        testing::check_determinism(Game::Freeway);
    }

    /// Uniformly random policy over all 6 actions, sticky 0.1, ramping on. Reference: the
    /// `minatar` 1.0.15 Python package under the same protocol, 2000 episodes: mean return
    /// 0.1305 (s.e. 0.00799). Our mean must lie within 2 combined standard errors.
    #[test]
    fn random_policy_return_matches_the_package() {
        testing::check_random_policy(Game::Freeway, 1000, 0.1305, 0.00799);
    }
}
