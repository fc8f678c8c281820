//! MinAtar (Young & Tian 2019): miniature Atari games on a 10×10 grid with boolean channels.
//! (Being ported: see the helper's notes.)

use super::{Env, EnvConfig};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Game {
    Asterix,
    Breakout,
    Freeway,
    Seaquest,
    SpaceInvaders,
}

pub fn make(game: Game, _cfg: &EnvConfig) -> Result<Box<dyn Env>> {
    Err(Error::Env(format!(
        "MinAtar {game:?} is not implemented yet"
    )))
}
