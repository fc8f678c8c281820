//! Neural-network building blocks (in progress).
