//! MinAtar Space Invaders. A cannon on the bottom row shoots upward at a 4×6 block of aliens
//! that marches sideways and steps down a row (reversing) whenever it touches the edge it is
//! moving toward. Shooting an alien gives +1. The alien nearest the cannon (by column, ties to
//! the left; lowest in that column) fires every 11 frames. The aliens move every
//! `min(aliens left, interval)` frames, so the last few speed up. Clearing a wave brings a new one;
//! with ramping, each new wave's interval is one shorter (12 down to 6). The episode ends when an
//! alien or an alien bullet reaches the cannon, or the block reaches the bottom row.
//!
//! Grids are bitmaps, one `u16` per row (bit `c` = column `c`); shifts rotate like the package's
//! `np.roll`.
//!
//! Channels: 0 cannon, 1 alien, 2 alien moving left, 3 alien moving right, 4 friendly bullet,
//! 5 enemy bullet.

use super::{set, set_rows, Rules, FIRE, LEFT, RIGHT};
use crate::rng::Rng;

const C: usize = 6;
const SHOT_COOL_DOWN: i32 = 5;
const ENEMY_MOVE_INTERVAL: i32 = 12;
const ENEMY_SHOT_INTERVAL: i32 = 10;
const MIN_MOVE_INTERVAL: i32 = 6;
const FULL_ROW: u16 = 0x3FF;
/// A new wave: rows 0–3, columns 2–7.
const WAVE: [u16; 10] = [0xFC, 0xFC, 0xFC, 0xFC, 0, 0, 0, 0, 0, 0];

/// Rows shift down by one; the bottom row wraps to the top.
fn roll_down(rows: &mut [u16; 10]) {
    rows.rotate_right(1);
}

/// Rows shift up by one; the top row wraps to the bottom.
fn roll_up(rows: &mut [u16; 10]) {
    rows.rotate_left(1);
}

/// Columns shift by one toward `dir` (−1 left, +1 right), wrapping.
fn roll_sideways(rows: &mut [u16; 10], dir: i32) {
    for r in rows.iter_mut() {
        *r = if dir < 0 {
            (*r >> 1) | ((*r & 1) << 9)
        } else {
            ((*r << 1) & FULL_ROW) | (*r >> 9)
        };
    }
}

fn count(rows: &[u16; 10]) -> i32 {
    rows.iter().map(|r| r.count_ones() as i32).sum()
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct SpaceInvaders {
    ramping: bool,
    pos: i32,
    f_bullets: [u16; 10],
    e_bullets: [u16; 10],
    aliens: [u16; 10],
    alien_dir: i32,
    enemy_move_interval: i32,
    alien_move_timer: i32,
    alien_shot_timer: i32,
    ramp_index: i32,
    shot_timer: i32,
}

impl SpaceInvaders {
    pub fn new(ramping: bool) -> Self {
        Self {
            ramping,
            pos: 5,
            f_bullets: [0; 10],
            e_bullets: [0; 10],
            aliens: WAVE,
            alien_dir: -1,
            enemy_move_interval: ENEMY_MOVE_INTERVAL,
            alien_move_timer: ENEMY_MOVE_INTERVAL,
            alien_shot_timer: ENEMY_SHOT_INTERVAL,
            ramp_index: 0,
            shot_timer: 0,
        }
    }

    /// How many waves have been cleared with a speed-up this episode.
    pub fn difficulty_ramp(&self) -> i32 {
        self.ramp_index
    }

    #[inline]
    fn bit(&self) -> u16 {
        1 << self.pos
    }

    /// The shooter: search columns by distance to the cannon (left first on ties) and take the
    /// lowest alien of the first non-empty column.
    fn nearest_alien(&self) -> Option<(usize, usize)> {
        let column = |c: i32| -> Option<(usize, usize)> {
            if !(0..10).contains(&c) {
                return None;
            }
            let mask = 1u16 << c;
            (0..10)
                .rev()
                .find(|&r| self.aliens[r] & mask != 0)
                .map(|r| (r, c as usize))
        };
        (0..10).find_map(|d| column(self.pos - d).or_else(|| column(self.pos + d)))
    }
}

impl Rules for SpaceInvaders {
    const ID: &'static str = "minatar/space_invaders";
    const CHANNELS: usize = C;

    fn reset(&mut self, _rng: &mut Rng) {
        *self = Self::new(self.ramping);
    }

    #[inline]
    fn act(&mut self, action: usize, _rng: &mut Rng) -> (f32, bool) {
        let mut terminal = false;
        if action == FIRE && self.shot_timer == 0 {
            self.f_bullets[9] |= self.bit();
            self.shot_timer = SHOT_COOL_DOWN;
        } else if action == LEFT {
            self.pos = (self.pos - 1).max(0);
        } else if action == RIGHT {
            self.pos = (self.pos + 1).min(9);
        }

        // Friendly bullets rise one row (leaving from the top), enemy bullets fall one row.
        roll_up(&mut self.f_bullets);
        self.f_bullets[9] = 0;
        roll_down(&mut self.e_bullets);
        self.e_bullets[0] = 0;
        if self.e_bullets[9] & self.bit() != 0 {
            terminal = true;
        }

        if self.aliens[9] & self.bit() != 0 {
            terminal = true;
        }
        if self.alien_move_timer == 0 {
            self.alien_move_timer = count(&self.aliens).min(self.enemy_move_interval);
            let any = self.aliens.iter().fold(0u16, |acc, r| acc | r);
            let at_edge =
                (any & 1 != 0 && self.alien_dir < 0) || (any & (1 << 9) != 0 && self.alien_dir > 0);
            if at_edge {
                self.alien_dir = -self.alien_dir;
                if self.aliens[9] != 0 {
                    terminal = true;
                }
                roll_down(&mut self.aliens);
            } else {
                roll_sideways(&mut self.aliens, self.alien_dir);
            }
            if self.aliens[9] & self.bit() != 0 {
                terminal = true;
            }
        }
        if self.alien_shot_timer == 0 {
            self.alien_shot_timer = ENEMY_SHOT_INTERVAL;
            // There is always an alien here: a cleared wave is replaced at the end of the frame.
            if let Some((r, c)) = self.nearest_alien() {
                self.e_bullets[r] |= 1 << c;
            }
        }

        let mut kills = 0;
        for (a, b) in self.aliens.iter_mut().zip(self.f_bullets.iter_mut()) {
            let hit = *a & *b;
            kills += hit.count_ones();
            *a &= !hit;
            *b &= !hit;
        }

        if self.shot_timer > 0 {
            self.shot_timer -= 1;
        }
        self.alien_move_timer -= 1;
        self.alien_shot_timer -= 1;
        if self.aliens.iter().all(|&r| r == 0) {
            if self.enemy_move_interval > MIN_MOVE_INTERVAL && self.ramping {
                self.enemy_move_interval -= 1;
                self.ramp_index += 1;
            }
            self.aliens = WAVE;
        }
        (kills as f32, terminal)
    }

    #[inline]
    fn write_obs(&self, obs: &mut [f32]) {
        set::<C>(obs, 9, self.pos as usize, 0);
        set_rows::<C>(obs, &self.aliens, 1);
        set_rows::<C>(obs, &self.aliens, if self.alien_dir < 0 { 2 } else { 3 });
        set_rows::<C>(obs, &self.f_bullets, 4);
        set_rows::<C>(obs, &self.e_bullets, 5);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{testing, Game, NOOP};
    use super::*;

    /// No alien moves or shoots for a while.
    fn calm() -> SpaceInvaders {
        let mut g = SpaceInvaders::new(true);
        g.alien_move_timer = 1_000;
        g.alien_shot_timer = 1_000;
        g
    }

    #[test]
    fn bullet_kills_an_alien_for_one() {
        let mut rng = Rng::seed_from_u64(0);
        let mut g = calm();
        // Cannon at 5 under the wave's column 5 (lowest alien in row 3): the bullet enters row 8
        // on the firing frame and rises a row per frame, reaching row 3 five frames later.
        let mut rewards = vec![g.act(FIRE, &mut rng).0];
        for _ in 0..5 {
            rewards.push(g.act(NOOP, &mut rng).0);
        }
        assert_eq!(rewards, vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(g.aliens[3], 0xFC & !(1 << 5));
        assert_eq!(g.f_bullets, [0; 10]);
    }

    #[test]
    fn fire_cools_down_for_five_frames() {
        let mut rng = Rng::seed_from_u64(0);
        let mut g = calm();
        g.pos = 0; // under an empty column: bullets fly off the top unhindered
        g.act(FIRE, &mut rng);
        for _ in 0..4 {
            g.act(FIRE, &mut rng);
        }
        assert_eq!(count(&g.f_bullets), 1);
        g.act(FIRE, &mut rng);
        assert_eq!(count(&g.f_bullets), 2);
    }

    #[test]
    fn aliens_march_then_step_down_and_reverse() {
        let mut rng = Rng::seed_from_u64(0);
        let mut g = calm();
        g.alien_move_timer = 0;
        g.act(NOOP, &mut rng);
        assert_eq!(g.aliens[0], 0xFC >> 1, "moved left");
        assert_eq!(g.alien_move_timer, ENEMY_MOVE_INTERVAL - 1);
        g.aliens = [0; 10];
        g.aliens[2] = 0b11; // touching the left edge
        g.alien_move_timer = 0;
        g.act(NOOP, &mut rng);
        assert_eq!((g.aliens[2], g.aliens[3], g.alien_dir), (0, 0b11, 1));
        assert_eq!(
            g.alien_move_timer,
            2 - 1,
            "two aliens left: they move every 2 frames"
        );
    }

    #[test]
    fn alien_reaching_the_cannon_or_bottom_terminates() {
        let mut rng = Rng::seed_from_u64(0);
        let mut g = calm();
        g.aliens = [0; 10];
        g.aliens[9] = 1; // bottom row, at the left edge, moving left: steps down → game over
        g.alien_move_timer = 0;
        assert!(g.act(NOOP, &mut rng).1);
        let mut g = calm();
        g.aliens = [0; 10];
        g.aliens[8] = 1 << 5; // right above the cannon
        g.alien_move_timer = 0;
        g.alien_dir = 1;
        g.aliens[8] |= 1 << 9; // at the right edge: the block steps down onto the cannon
        assert!(g.act(NOOP, &mut rng).1);
    }

    #[test]
    fn nearest_alien_shoots_and_bullet_hits_cannon() {
        let mut rng = Rng::seed_from_u64(0);
        let mut g = calm();
        g.alien_shot_timer = 0;
        g.aliens = [0; 10];
        g.aliens[2] = (1 << 3) | (1 << 7); // equally far (2) from the cannon at 5: left wins
        g.aliens[4] = 1 << 3;
        g.act(NOOP, &mut rng);
        assert_eq!(g.e_bullets[4], 1 << 3, "lowest alien of column 3 fires");
        let mut g = calm();
        g.e_bullets[8] = 1 << 5;
        assert!(g.act(NOOP, &mut rng).1);
    }

    #[test]
    fn cleared_wave_respawns_faster_with_ramping() {
        let mut rng = Rng::seed_from_u64(0);
        for ramping in [true, false] {
            let mut g = SpaceInvaders::new(ramping);
            g.alien_move_timer = 1_000;
            g.alien_shot_timer = 1_000;
            g.aliens = [0; 10];
            g.aliens[7] = 1 << 5;
            g.f_bullets[8] = 1 << 5;
            assert_eq!(g.act(NOOP, &mut rng), (1.0, false));
            assert_eq!(g.aliens, WAVE);
            let expected = if ramping { (11, 1) } else { (12, 0) };
            assert_eq!((g.enemy_move_interval, g.ramp_index), expected);
        }
    }

    #[test]
    fn observation_layout() {
        let mut g = SpaceInvaders::new(true);
        g.f_bullets[6] = 1 << 1;
        g.e_bullets[7] = 1 << 8;
        let mut obs = vec![0.0; 600];
        g.write_obs(&mut obs);
        let at = |r: usize, c: usize, ch: usize| obs[(r * 10 + c) * 6 + ch];
        assert_eq!(at(9, 5, 0), 1.0);
        assert_eq!((at(0, 2, 1), at(0, 2, 2), at(0, 2, 3)), (1.0, 1.0, 0.0));
        assert_eq!((at(6, 1, 4), at(7, 8, 5)), (1.0, 1.0));
        assert_eq!(obs.iter().sum::<f32>(), 1.0 + 24.0 + 24.0 + 2.0);
    }

    #[test]
    fn deterministic_given_seed() {
        testing::check_determinism(Game::SpaceInvaders);
    }

    /// Uniformly random policy over all 6 actions, sticky 0.1, ramping on. Reference: the
    /// `minatar` 1.0.15 Python package under the same protocol, 15,000 episodes (two runs of
    /// 5,000 and 10,000 pooled): mean return 2.8278 (s.e. 0.0185). Our mean must lie within 2
    /// combined standard errors.
    #[test]
    fn random_policy_return_matches_the_package() {
        testing::check_random_policy(Game::SpaceInvaders, 5000, 2.8278, 0.0185);
    }
}
