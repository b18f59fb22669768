//! Each component's last known state, for `/healthz`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A component's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not yet connected.
    Starting,
    /// Working.
    Ok,
    /// Working with trouble (e.g. retrying).
    Degraded,
    /// Not working: the gateway cannot do its job.
    Down,
    /// Not configured.
    Disabled,
}

/// One component's state with its detail.
#[derive(Debug, Clone, Serialize)]
pub struct Component {
    /// The state.
    pub status: Status,
    /// What is wrong, or what it is connected to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When the state last changed.
    pub since: DateTime<Utc>,
}

/// Prefix of the component of each polled Modbus device: `modbus/<device-id>`.
pub const MODBUS_PREFIX: &str = "modbus/";

/// Whether a component being down means the gateway cannot do its job
/// (`/healthz` answers 503). One device that stops answering does not: it
/// is shown, counted and alarmed on, while everything else goes on.
pub fn affects_readiness(name: &str) -> bool {
    !name.starts_with(MODBUS_PREFIX)
}

/// The health of every component, keyed by name (`mqtt`, `influx`, `modbus/<id>`).
#[derive(Debug, Default)]
pub struct Health {
    components: Mutex<BTreeMap<String, Component>>,
}

impl Health {
    /// Sets a component's state; returns whether the status changed (so callers log transitions once).
    pub fn set(&self, name: &str, status: Status, detail: Option<String>) -> bool {
        let mut map = self.components.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(name) {
            Some(c) if c.status == status => {
                c.detail = detail;
                false
            }
            _ => {
                map.insert(
                    name.to_owned(),
                    Component {
                        status,
                        detail,
                        since: Utc::now(),
                    },
                );
                true
            }
        }
    }

    /// A copy of every component's state.
    pub fn snapshot(&self) -> BTreeMap<String, Component> {
        self.components
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One component's status.
    pub fn status(&self, name: &str) -> Option<Status> {
        self.components
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map(|c| c.status)
    }
}
