//! Duty alerts (值班通知): who is told of an alarm. So far the `roster`
//! (who is on duty when, pure); routing, escalation, the outbox and the
//! channels build on it.

pub mod roster;
