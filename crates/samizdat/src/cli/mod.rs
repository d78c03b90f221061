//! The subcommands besides `serve` and `client`: each prints or changes
//! something and exits.
//!
//! | module | command |
//! |---|---|
//! | [`link`] | `samizdat link`: the links and their QR codes, no server |
//! | [`list`] | `samizdat list`: make the list key, sign and check server lists |
//! | [`doctor`] | `samizdat doctor`: config, clock, DNS, cover and DC checks, each with a fix |
//! | [`users`] | `samizdat users`: the fleet's shared user table |

pub mod doctor;
pub mod link;
pub mod list;
pub mod users;
