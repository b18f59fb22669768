//! Where readings come from. Each source is a task that owns its connection
//! and sends `Reading`s into a bounded channel; it never calls the router or
//! the sink. Only this module knows topics and registers: `mqtt` (one
//! connection, `decode` is pure) and `modbus` (polled devices, `modbus::map`
//! is pure).

pub mod decode;
pub mod modbus;
pub mod mqtt;
