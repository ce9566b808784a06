//! Tickets: time-limited bearer grants. A request is decided by the policies
//! and becomes a [`Scope`]; the ticket id is shown once and stored only as a
//! hash; stores expire and revoke.

pub mod check;
pub mod id;
pub mod issue;
pub mod redis_store;
pub mod scope;
pub mod store;
pub mod waiver;

pub use check::TicketCheck;
pub use id::{MalformedTicket, TicketHash, TicketId};
pub use issue::{BadRequest, IssueError, IssuePolicy, IssuedTicket, TicketIssuer, TicketRequest};
pub use redis_store::RedisTicketStore;
pub use scope::{Aggregate, Scope};
pub use store::{Lookup, MemoryTicketStore, Stale, StoreError, Ticket, TicketStore};
pub use waiver::Waiver;
