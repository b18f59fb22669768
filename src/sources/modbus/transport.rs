//! The wire: opening a Modbus TCP connection or a serial port, and reading
//! one plan's requests with a timeout around each.
//!
//! tokio-modbus answers `Result<Result<T, ExceptionCode>, Error>`: the outer
//! error is the link (transport, or a frame that does not belong to the
//! request), the inner one the device refusing. Every failure here says
//! whether the link is still trustworthy: after a timeout, a lost connection
//! or a garbled frame it is not (a late answer would be taken for the next
//! one), so the caller drops it; after an exception it is, and is kept.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_modbus::client::{rtu, tcp, Context, Reader as _};
use tokio_modbus::Slave;
use tokio_serial::{SerialPort as _, SerialPortBuilderExt as _};

use super::map::{Answer, ReadPlan, Request};
use super::LineSpec;
use crate::config::{Parity, Table};
use crate::telemetry::ModbusFailure;

/// Why a poll (or one attempt of it) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The metric label.
    pub(crate) reason: ModbusFailure,
    /// For the log and `/healthz`.
    pub(crate) detail: String,
    /// The link can no longer be trusted and must be reopened.
    pub(crate) link_broken: bool,
}

impl Failure {
    pub(crate) fn new(reason: ModbusFailure, detail: String, link_broken: bool) -> Self {
        Self {
            reason,
            detail,
            link_broken,
        }
    }
}

/// `host:port`, with port 502 when it is left out.
pub(crate) fn with_default_port(address: &str) -> String {
    let has_port = match address.rsplit_once(':') {
        // `[::1]:502` or `host:502`; a bare IPv6 address has colons but no brackets.
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (host.ends_with(']') || !host.contains(':'))
        }
        None => false,
    };
    if has_port {
        address.to_owned()
    } else if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]:502")
    } else {
        format!("{address}:502")
    }
}

/// Connects to a Modbus TCP device (resolving its name each time, so a
/// changed address is followed) and addresses `unit` on it.
pub(crate) async fn connect_tcp(
    address: &str,
    unit: u8,
    timeout: Duration,
) -> Result<Context, Failure> {
    let connect = async {
        let stream = TcpStream::connect(address).await?;
        // Requests are small and answered one at a time: never wait for Nagle.
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) => Ok(tcp::attach_slave(stream, Slave(unit))),
        Ok(Err(e)) => Err(Failure::new(
            ModbusFailure::Transport,
            format!("cannot connect to {address}: {e}"),
            true,
        )),
        Err(_) => Err(Failure::new(
            ModbusFailure::Timeout,
            format!("connecting to {address} took longer than {timeout:?}"),
            true,
        )),
    }
}

/// Opens a serial line and discards whatever was waiting in its buffers
/// (a late answer to a request that already timed out).
pub(crate) fn open_serial(line: &LineSpec) -> Result<Context, Failure> {
    let fail = |e: tokio_serial::Error| {
        Failure::new(
            ModbusFailure::Transport,
            format!(
                "cannot open serial line {} ({}): {e}",
                line.name,
                line.path.display()
            ),
            true,
        )
    };
    let data_bits = match line.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let stop_bits = match line.stop_bits {
        2 => tokio_serial::StopBits::Two,
        _ => tokio_serial::StopBits::One,
    };
    let parity = match line.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let port = tokio_serial::new(line.path.to_string_lossy(), line.baud)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .parity(parity)
        .flow_control(tokio_serial::FlowControl::None)
        .open_native_async()
        .map_err(fail)?;
    port.clear(tokio_serial::ClearBuffer::All).map_err(fail)?;
    // The unit is set before each device's poll.
    Ok(rtu::attach_slave(port, Slave(1)))
}

/// Reads every request of `plan` in turn; stops at the first failure.
/// `gap` is kept before each request (a serial line's turnaround).
pub(crate) async fn read_all(
    ctx: &mut Context,
    plan: &ReadPlan,
    timeout: Duration,
    gap: Duration,
) -> Result<Vec<Answer>, Failure> {
    let mut answers = Vec::with_capacity(plan.requests().len());
    for req in plan.requests() {
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        answers.push(read(ctx, req, timeout).await?);
    }
    Ok(answers)
}

async fn read(ctx: &mut Context, req: &Request, timeout: Duration) -> Result<Answer, Failure> {
    let what = || {
        format!(
            "{} {}..{}",
            req.table.as_str(),
            req.address,
            u32::from(req.address) + u32::from(req.count) - 1
        )
    };
    let (a, n) = (req.address, req.count);
    let result = tokio::time::timeout(timeout, async {
        match req.table {
            Table::Coil => ctx.read_coils(a, n).await.map(|r| r.map(Answer::Bits)),
            Table::DiscreteInput => ctx
                .read_discrete_inputs(a, n)
                .await
                .map(|r| r.map(Answer::Bits)),
            Table::Input => ctx
                .read_input_registers(a, n)
                .await
                .map(|r| r.map(Answer::Words)),
            Table::Holding => ctx
                .read_holding_registers(a, n)
                .await
                .map(|r| r.map(Answer::Words)),
        }
    })
    .await;
    match result {
        Ok(Ok(Ok(answer))) => Ok(answer),
        Ok(Ok(Err(code))) => Err(Failure::new(
            ModbusFailure::Exception,
            format!("exception {} ({code:?}) reading {}", u8::from(code), what()),
            false,
        )),
        Ok(Err(tokio_modbus::Error::Transport(e)))
            if e.kind() == std::io::ErrorKind::InvalidData =>
        {
            Err(Failure::new(
                ModbusFailure::Decode,
                format!("garbled answer reading {}: {e}", what()),
                true,
            ))
        }
        Ok(Err(tokio_modbus::Error::Transport(e))) => Err(Failure::new(
            ModbusFailure::Transport,
            format!("connection failed reading {}: {e}", what()),
            true,
        )),
        Ok(Err(tokio_modbus::Error::Protocol(e))) => Err(Failure::new(
            ModbusFailure::Decode,
            format!("answer does not match the request reading {}: {e}", what()),
            true,
        )),
        Err(_) => Err(Failure::new(
            ModbusFailure::Timeout,
            format!("no answer within {timeout:?} reading {}", what()),
            true,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_port() {
        assert_eq!(with_default_port("10.0.0.5"), "10.0.0.5:502");
        assert_eq!(with_default_port("10.0.0.5:1502"), "10.0.0.5:1502");
        assert_eq!(with_default_port("hood.local"), "hood.local:502");
        assert_eq!(with_default_port("::1"), "[::1]:502");
        assert_eq!(with_default_port("[::1]:5020"), "[::1]:5020");
    }
}
