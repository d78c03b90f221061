//! Fleets: two real `samizdat serve` instances sharing one real
//! `redis-server` (started here on 127.0.0.1, on a free port, without
//! persistence, in its own temporary directory, and stopped afterwards).
//!
//! Without `redis-server` these tests say so loudly and pass, unless `CI`
//! is set: there it must be installed (scripts/test installs it).
//!
//! | module | what |
//! |---|---|
//! | [`harness`] | the Redis process, fleet instances and the clients the tests use |
//! | [`replay`] | replays refused across instances |
//! | [`users`] | shared users, limits and quotas |
//! | [`redis_down`] | fallbacks while Redis is away, and its return |
//! | [`operations`] | TLS to Redis, health endpoints, `samizdat doctor` |

mod harness;
mod operations;
mod redis_down;
mod replay;
mod users;
