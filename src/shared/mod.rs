//! State shared by esq replicas through Redis: the deployment named in the
//! config and one connection to it that the ticket store and the breach
//! sentinel share.

mod connection;
mod target;

pub use connection::{Redis, Unavailable};
pub use target::{redacted, BadRedisUrl, RedisTarget};
