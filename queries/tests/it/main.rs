//! Integration tests of the analyst surface over the committed sample world.

mod catalog;
mod slt;
mod world;
