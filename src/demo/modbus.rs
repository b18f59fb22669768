//! Simulated Modbus TCP devices, served in-process by tokio-modbus's server:
//! the demo's kitchen hood and chemical cabinet, and the benchmark's
//! hundreds of devices.
//!
//! Each device holds a register image that a task refreshes every second
//! from the simulated feed (`sim::payload`), written through the device's
//! own register map (`map::encode`), so the gateway polls it exactly as it
//! polls a real controller and decodes the same values back.

use std::collections::HashMap;
use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
use tokio_modbus::{ExceptionCode, Request, Response};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::Table;
use crate::reading::{Kind, Value};
use crate::sources::modbus::map::{self, Answer, ReadPlan};

/// A device's four tables; an address never written reads as 0.
#[derive(Debug, Default)]
struct Image {
    coils: HashMap<u16, bool>,
    discrete: HashMap<u16, bool>,
    input: HashMap<u16, u16>,
    holding: HashMap<u16, u16>,
}

impl Image {
    fn bits(table: &HashMap<u16, bool>, address: u16, count: u16) -> Vec<bool> {
        (0..count)
            .map(|i| {
                table
                    .get(&address.wrapping_add(i))
                    .copied()
                    .unwrap_or(false)
            })
            .collect()
    }

    fn words(table: &HashMap<u16, u16>, address: u16, count: u16) -> Vec<u16> {
        (0..count)
            .map(|i| table.get(&address.wrapping_add(i)).copied().unwrap_or(0))
            .collect()
    }

    /// Writes one point's value through the map.
    fn write(&mut self, p: &map::Point, value: &Value) {
        match (map::encode(p, value), p.table) {
            (Answer::Bits(b), Table::Coil) => {
                self.coils
                    .insert(p.address, b.first().copied().unwrap_or(false));
            }
            (Answer::Bits(b), _) => {
                self.discrete
                    .insert(p.address, b.first().copied().unwrap_or(false));
            }
            (Answer::Words(w), table) => {
                let regs = if table == Table::Input {
                    &mut self.input
                } else {
                    &mut self.holding
                };
                if p.ty == crate::config::RegisterType::Bit {
                    // Only this bit of the register changes.
                    let mask = 1u16 << p.bit;
                    let old = regs.get(&p.address).copied().unwrap_or(0);
                    let new = w.first().copied().unwrap_or(0);
                    regs.insert(p.address, (old & !mask) | (new & mask));
                } else {
                    for (i, word) in w.into_iter().enumerate() {
                        regs.insert(p.address.wrapping_add(i as u16), word);
                    }
                }
            }
        }
    }
}

/// The tokio-modbus service of one simulated device.
#[derive(Debug, Clone)]
struct Service {
    image: Arc<Mutex<Image>>,
    requests: Arc<AtomicU64>,
}

impl tokio_modbus::server::Service for Service {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let image = self.image.lock().unwrap_or_else(|e| e.into_inner());
        ready(match req {
            Request::ReadCoils(a, n) => Ok(Response::ReadCoils(Image::bits(&image.coils, a, n))),
            Request::ReadDiscreteInputs(a, n) => Ok(Response::ReadDiscreteInputs(Image::bits(
                &image.discrete,
                a,
                n,
            ))),
            Request::ReadInputRegisters(a, n) => Ok(Response::ReadInputRegisters(Image::words(
                &image.input,
                a,
                n,
            ))),
            Request::ReadHoldingRegisters(a, n) => Ok(Response::ReadHoldingRegisters(
                Image::words(&image.holding, a, n),
            )),
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// A running simulated device.
#[derive(Debug, Clone)]
pub struct SimDevice {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<AtomicU64>,
}

impl SimDevice {
    /// Requests it has answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Serves a simulated device of `kind` with registers laid out by `plan`
/// on a free loopback port, its values changing every second, until `stop`.
/// `salt` makes devices of one kind differ.
pub async fn serve(
    kind: Kind,
    plan: ReadPlan,
    salt: u64,
    stop: CancellationToken,
) -> std::io::Result<SimDevice> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let image = Arc::new(Mutex::new(Image::default()));
    let requests = Arc::new(AtomicU64::new(0));
    let service = Service {
        image: image.clone(),
        requests: requests.clone(),
    };
    fill(&image, kind, &plan, 0, salt);

    let server = Server::new(listener);
    let serve_stop = stop.clone();
    tokio::spawn(async move {
        let on_connected = |stream, socket_addr| {
            let service = service.clone();
            async move { accept_tcp_connection(stream, socket_addr, |_| Ok(Some(service.clone()))) }
        };
        let on_error = |e| debug!(error = %e, "Simulated Modbus device: connection ended.");
        let _ = server
            .serve_until(&on_connected, on_error, serve_stop.cancelled_owned())
            .await;
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut seq = 0;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            seq += 1;
            fill(&image, kind, &plan, seq, salt);
        }
    });
    Ok(SimDevice { addr, requests })
}

/// Writes the `seq`-th simulated values of the kind into the image.
fn fill(image: &Mutex<Image>, kind: Kind, plan: &ReadPlan, seq: u64, salt: u64) {
    let payload = super::sim::payload(kind, seq, salt, 0);
    let Ok(serde_json::Value::Object(values)) = serde_json::from_str::<serde_json::Value>(&payload)
    else {
        return;
    };
    let mut image = image.lock().unwrap_or_else(|e| e.into_inner());
    for p in plan.points() {
        let value = match values.get(&*p.field) {
            Some(serde_json::Value::Bool(b)) => Value::Bool(*b),
            Some(v) => Value::F64(v.as_f64().unwrap_or(0.0)),
            // A field the feed lacks (a custom map's): a slow count.
            None => Value::F64((seq % 1000) as f64),
        };
        image.write(p, &value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RegisterConfig, RegisterType, WordOrder};

    #[test]
    fn the_image_decodes_to_what_was_written() {
        let reg = |field: &str, address, ty, bit| RegisterConfig {
            field: field.into(),
            table: Table::Holding,
            address,
            ty,
            bit,
            word_order: WordOrder::Little,
            scale: 0.1,
            offset: 0.0,
        };
        let regs = [
            reg("voc_ppm", 0, RegisterType::F32, None),
            RegisterConfig {
                scale: 1.0,
                ..reg("door_open", 2, RegisterType::Bit, Some(0))
            },
            RegisterConfig {
                scale: 1.0,
                ..reg("locked", 2, RegisterType::Bit, Some(1))
            },
            reg("temp_c", 3, RegisterType::I16, None),
        ];
        let plan = ReadPlan::build(Kind::Labcab, &regs, map::Limits::default()).expect("plan");
        let image = Mutex::new(Image::default());
        fill(&image, Kind::Labcab, &plan, 5, 1);
        let words = Image::words(&image.lock().expect("image").holding, 0, 4);
        let fields = plan.decode(&[Answer::Words(words)]).expect("decoded");
        let want: serde_json::Value =
            serde_json::from_str(&super::super::sim::payload(Kind::Labcab, 5, 1, 0)).expect("json");
        for (name, value) in fields {
            match value {
                Value::Bool(b) => assert_eq!(want[&*name], b, "{name}"),
                v => {
                    let got = v.as_f64().expect("number");
                    let expect = want[&*name].as_f64().expect("number");
                    assert!((got - expect).abs() < 0.051, "{name}: {got} vs {expect}");
                }
            }
        }
    }
}
