//! The devices the gateway knows: declared ones with their places, undeclared
//! ones that published (when the policy accepts them), and each one's last
//! reading and online state.
//!
//! The router is the only writer (`admit`); the web reads snapshots.
//!
//! Memory: a device's latest values are at most `gateway.max_fields` names
//! (a device that changes its field names keeps the first ones; the time
//! series has them all), each string at most `gateway.max_string_bytes`
//! (the decoder cuts longer ones), so the registry is bounded by about
//! `max_devices × max_fields × (max_string_bytes + ~100 B)` whatever devices
//! send (the rule engine holds a second copy of the same bound).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, TimeZone, Utc};
use foldhash::fast::RandomState;
use serde::Serialize;

use crate::config::{kind_heartbeat_ms, Config, KnownDevice, UndeclaredPolicy};
use crate::reading::Reject;
use crate::reading::{FieldName, Kind, Location, Reading, Source, Value};

/// What the registry keeps of one device.
#[derive(Debug, Clone)]
struct Entry {
    id: Arc<str>,
    site: Arc<str>,
    kind: Kind,
    declared: bool,
    /// Declared in `[[modbus.devices]]`: its readings come from the poller only.
    polled: bool,
    location: Option<Arc<Location>>,
    source: Option<Source>,
    /// Receive time of the last reading, ms: what online/offline is judged on.
    last_seen_ms: Option<i64>,
    /// The last reading's own time, ms.
    last_ts_ms: Option<i64>,
    /// Silence after which it is offline, ms.
    heartbeat_ms: i64,
    latest: Vec<(FieldName, Value)>,
}

/// A device as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    /// Device id.
    pub id: Arc<str>,
    /// Kind.
    pub kind: Kind,
    /// Site.
    pub site: Arc<str>,
    /// Place, when declared.
    pub location: Option<Location>,
    /// Whether it is in the configuration.
    pub declared: bool,
    /// Where its last reading came from.
    pub source: Option<Source>,
    /// Whether it reported within its kind's heartbeat.
    pub online: bool,
    /// When it last reported.
    pub last_seen: Option<DateTime<Utc>>,
    /// Its latest fields.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// A device's online state.
#[derive(Debug, Clone)]
pub struct Presence {
    /// Device id.
    pub id: Arc<str>,
    /// Site.
    pub site: Arc<str>,
    /// Kind.
    pub kind: Kind,
    /// Whether it reported within its kind's heartbeat.
    pub online: bool,
    /// When it last reported, epoch ms.
    pub last_seen_ms: Option<i64>,
}

/// Online and offline counts of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KindCounts {
    /// Reported within the heartbeat.
    pub online: usize,
    /// Silent past the heartbeat, or never heard.
    pub offline: usize,
}

/// Devices by site, then by id: lookups by `&str` need no allocation.
/// Every reading is looked up twice, so the faster foldhash (seeded per map)
/// instead of SipHash, whose extra strength is against floods of chosen
/// keys: ids are short, validated, and capped in number by `max_devices`.
type Sites = HashMap<Arc<str>, HashMap<Arc<str>, Entry, RandomState>, RandomState>;

/// The device registry.
#[derive(Debug)]
pub struct Registry {
    policy: UndeclaredPolicy,
    max_devices: usize,
    max_fields: usize,
    inner: RwLock<Sites>,
}

impl Registry {
    /// A registry holding the devices known before any message
    /// (`Config::known_devices`), under the configuration's policy.
    pub fn new(cfg: &Config, known: &[KnownDevice<'_>]) -> Self {
        let mut sites = Sites::default();
        for d in known {
            insert_declared(&mut sites, d);
        }
        Self {
            policy: cfg.gateway.undeclared_devices,
            max_devices: cfg.gateway.max_devices,
            max_fields: cfg.gateway.max_fields,
            inner: RwLock::new(sites),
        }
    }

    /// Admits a reading received at `now_ms`: checks the device against the
    /// declarations and the policy, fills in its location and interned ids,
    /// and records it as the device's latest.
    pub fn admit(&self, r: &mut Reading, now_ms: i64) -> Result<(), Reject> {
        let mut sites = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let known = sites
            .get_mut(&*r.site)
            .and_then(|devices| devices.get_mut(&*r.device));
        let entry = match known {
            Some(e) => e,
            None => {
                if self.policy == UndeclaredPolicy::Ignore {
                    return Err(Reject::UnknownDevice);
                }
                let count: usize = sites.values().map(HashMap::len).sum();
                if count >= self.max_devices {
                    return Err(Reject::RegistryFull);
                }
                let site = match sites.get_key_value(&*r.site) {
                    Some((k, _)) => k.clone(),
                    None => r.site.clone(),
                };
                let e = Entry {
                    id: r.device.clone(),
                    site: site.clone(),
                    kind: r.kind,
                    declared: false,
                    polled: false,
                    location: None,
                    source: None,
                    last_seen_ms: None,
                    last_ts_ms: None,
                    heartbeat_ms: kind_heartbeat_ms(r.kind),
                    latest: Vec::new(),
                };
                sites
                    .entry(site)
                    .or_default()
                    .entry(r.device.clone())
                    .or_insert(e)
            }
        };
        if entry.kind != r.kind {
            return Err(Reject::KindMismatch);
        }
        // Anyone who can publish could otherwise speak for a polled hood
        // (and raise its gas alarm): the poller is its only voice.
        if entry.polled && r.source != Source::Modbus {
            return Err(Reject::SourceMismatch);
        }
        r.site = entry.site.clone();
        r.device = entry.id.clone();
        r.location = entry.location.clone();
        entry.source = Some(r.source);
        entry.last_seen_ms = Some(now_ms);
        // A late (buffered) reading updates presence but not the latest values.
        if entry.last_ts_ms.is_none_or(|t| r.ts_ms >= t) {
            entry.last_ts_ms = Some(r.ts_ms);
            merge_latest(&mut entry.latest, &r.fields, self.max_fields, r.kind);
        }
        Ok(())
    }

    /// Every device, sorted by site then id.
    pub fn devices(&self, now_ms: i64) -> Vec<DeviceView> {
        let sites = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<DeviceView> = sites
            .values()
            .flat_map(HashMap::values)
            .map(|e| view(e, now_ms))
            .collect();
        out.sort_by(|a, b| (&a.site, &a.id).cmp(&(&b.site, &b.id)));
        out
    }

    /// Every device's online state, without its fields: what the event
    /// stream compares every two seconds, cheap for 10,000 devices.
    pub fn presence(&self, now_ms: i64) -> Vec<Presence> {
        let sites = self.inner.read().unwrap_or_else(|e| e.into_inner());
        sites
            .values()
            .flat_map(HashMap::values)
            .map(|e| Presence {
                id: e.id.clone(),
                site: e.site.clone(),
                kind: e.kind,
                online: is_online(e, now_ms),
                last_seen_ms: e.last_seen_ms,
            })
            .collect()
    }

    /// Online and offline counts per kind.
    pub fn counts(&self, now_ms: i64) -> Vec<(Kind, KindCounts)> {
        let sites = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut counts: Vec<(Kind, KindCounts)> = Kind::ALL
            .iter()
            .map(|k| (*k, KindCounts::default()))
            .collect();
        for e in sites.values().flat_map(HashMap::values) {
            if let Some((_, c)) = counts.iter_mut().find(|(k, _)| *k == e.kind) {
                if is_online(e, now_ms) {
                    c.online += 1;
                } else {
                    c.offline += 1;
                }
            }
        }
        counts
    }

    /// How many devices are known.
    pub fn len(&self) -> usize {
        let sites = self.inner.read().unwrap_or_else(|e| e.into_inner());
        sites.values().map(HashMap::len).sum()
    }

    /// Whether no device is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buildings of the devices with a place, each with its floors:
    /// the zones a drill or maintenance can name.
    pub fn buildings(&self) -> BTreeMap<String, BTreeSet<String>> {
        let sites = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for loc in sites
            .values()
            .flat_map(HashMap::values)
            .filter_map(|e| e.location.as_deref())
        {
            if let Some(b) = &loc.building {
                let floors = out.entry(b.clone()).or_default();
                floors.extend(loc.floor.clone());
            }
        }
        out
    }
}

fn insert_declared(sites: &mut Sites, known: &KnownDevice<'_>) {
    let d = &known.config;
    let site: Arc<str> = match sites.get_key_value(d.site.as_str()) {
        Some((k, _)) => k.clone(),
        None => Arc::from(d.site.as_str()),
    };
    let loc = d.location();
    let entry = Entry {
        id: Arc::from(d.id.as_str()),
        site: site.clone(),
        kind: d.kind,
        declared: true,
        polled: known.polled,
        location: (loc != Location::default()).then(|| Arc::new(loc)),
        source: known.polled.then_some(Source::Modbus),
        last_seen_ms: None,
        last_ts_ms: None,
        heartbeat_ms: known.heartbeat_ms,
        latest: Vec::new(),
    };
    sites
        .entry(site)
        .or_default()
        .insert(entry.id.clone(), entry);
}

/// Updates the latest values; a new name is added while fewer than `max` are
/// held, a name of the kind's own always (the page shows those).
fn merge_latest(
    latest: &mut Vec<(FieldName, Value)>,
    fields: &[(FieldName, Value)],
    max: usize,
    kind: Kind,
) {
    for (i, (name, value)) in fields.iter().enumerate() {
        // A device sends the same fields in the same order: try that slot first.
        let slot = if latest.get(i).is_some_and(|(n, _)| n == name) {
            Some(i)
        } else {
            latest.iter().position(|(n, _)| n == name)
        };
        match slot {
            Some(i) => latest[i].1 = value.clone(),
            None if latest.len() < max || kind.field_type(name).is_some() => {
                latest.push((name.clone(), value.clone()))
            }
            None => {}
        }
    }
}

fn is_online(e: &Entry, now_ms: i64) -> bool {
    e.last_seen_ms.is_some_and(|t| now_ms - t <= e.heartbeat_ms)
}

fn view(e: &Entry, now_ms: i64) -> DeviceView {
    DeviceView {
        id: e.id.clone(),
        kind: e.kind,
        site: e.site.clone(),
        location: e.location.as_deref().cloned(),
        declared: e.declared,
        source: e.source,
        online: is_online(e, now_ms),
        last_seen: e
            .last_seen_ms
            .and_then(|t| Utc.timestamp_millis_opt(t).single()),
        fields: e
            .latest
            .iter()
            .map(|(n, v)| {
                let json = serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
                (n.to_string(), json)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Source;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n{extra}\n[[devices]]\nid = \"a3-301\"\nkind = \"smoke\"\nsite = \"yz\"\nbuilding = \"A3\"\nfloor = \"3\"\nroom = \"301\"\n"
        );
        Config::from_toml(&text, Vec::new()).expect("config").config
    }

    fn registry(extra: &str) -> Registry {
        let cfg = config(extra);
        Registry::new(&cfg, &cfg.known_devices())
    }

    fn reading(site: &str, device: &str, kind: Kind, ts: i64) -> Reading {
        Reading::new(
            Arc::from(site),
            Arc::from(device),
            kind,
            ts,
            vec![("temp_c".into(), Value::F64(20.0))],
            Source::Mqtt,
        )
    }

    #[test]
    fn declared_device_gets_its_location() {
        let reg = registry("");
        let mut r = reading("yz", "a3-301", Kind::Smoke, 1000);
        reg.admit(&mut r, 1000).expect("admitted");
        assert_eq!(
            r.location.as_ref().and_then(|l| l.room.as_deref()),
            Some("301")
        );
        let mut wrong = reading("yz", "a3-301", Kind::Gate, 1000);
        assert_eq!(reg.admit(&mut wrong, 1000), Err(Reject::KindMismatch));
    }

    #[test]
    fn undeclared_policy_and_capacity() {
        let reg = registry("[gateway]\nmax_devices = 2");
        assert!(reg
            .admit(&mut reading("yz", "x1", Kind::Gate, 1), 1)
            .is_ok());
        assert_eq!(
            reg.admit(&mut reading("yz", "x2", Kind::Gate, 1), 1),
            Err(Reject::RegistryFull)
        );
        let strict = registry("[gateway]\nundeclared_devices = \"ignore\"");
        assert_eq!(
            strict.admit(&mut reading("yz", "x1", Kind::Gate, 1), 1),
            Err(Reject::UnknownDevice)
        );
    }

    #[test]
    fn modbus_devices_are_devices_with_their_source() {
        let reg = registry(
            r#"[modbus.maps.m]
registers = [{ field = "temp_c", table = "holding", address = 0, type = "i16" }]
[[modbus.devices]]
device = "a3-301"
transport = "tcp"
address = "10.0.0.1"
map = "m"
[[modbus.devices]]
id = "chem-9"
kind = "labcab"
site = "yz"
room = "203"
transport = "tcp"
address = "10.0.0.2"
map = "m"
"#,
        );
        let devices = reg.devices(0);
        assert_eq!(devices.len(), 2);
        assert!(devices
            .iter()
            .all(|d| d.source == Some(Source::Modbus) && d.declared));
        let chem = devices.iter().find(|d| &*d.id == "chem-9").expect("chem-9");
        assert_eq!(chem.kind, Kind::Labcab);
        assert_eq!(
            chem.location.as_ref().and_then(|l| l.room.as_deref()),
            Some("203")
        );
    }

    #[test]
    fn a_polled_device_takes_no_mqtt_readings() {
        let reg = registry(
            r#"[modbus.maps.m]
registers = [{ field = "gas_lel_pct", table = "input", address = 0, type = "u16" }]
[[modbus.devices]]
id = "hood-3"
kind = "kitchen"
site = "yz"
transport = "tcp"
address = "10.0.0.1"
map = "m"
"#,
        );
        let mut spoofed = reading("yz", "hood-3", Kind::Kitchen, 1000);
        assert_eq!(reg.admit(&mut spoofed, 1000), Err(Reject::SourceMismatch));
        let mut polled = reading("yz", "hood-3", Kind::Kitchen, 1000);
        polled.source = Source::Modbus;
        reg.admit(&mut polled, 1000).expect("the poller's reading");
        let hood = reg
            .devices(1000)
            .into_iter()
            .find(|d| &*d.id == "hood-3")
            .expect("hood");
        assert_eq!(hood.source, Some(Source::Modbus));
        // An MQTT device declared in [[devices]] alone still takes MQTT.
        let mut smoke = reading("yz", "a3-301", Kind::Smoke, 1000);
        reg.admit(&mut smoke, 1000).expect("mqtt detector");
    }

    #[test]
    fn online_follows_heartbeat() {
        let reg = registry("");
        assert_eq!(
            reg.counts(0)[0],
            (
                Kind::Smoke,
                KindCounts {
                    online: 0,
                    offline: 1
                }
            )
        );
        reg.admit(&mut reading("yz", "a3-301", Kind::Smoke, 0), 0)
            .expect("admit");
        assert_eq!(reg.counts(90_000)[0].1.online, 1);
        assert_eq!(reg.counts(90_001)[0].1.offline, 1);
        let d = &reg.devices(1)[0];
        assert!(d.online);
        assert_eq!(d.fields["temp_c"], serde_json::json!(20.0));
    }

    #[test]
    fn a_polled_device_is_offline_when_its_poller_gives_up() {
        // Polled every 2 s, 1 s timeout, 2 retries: a failing poll takes 3 s,
        // offline after 3 of them; online until one cycle more, 12 s.
        let reg = registry(
            r#"[modbus.maps.m]
registers = [{ field = "temp_c", table = "holding", address = 0, type = "i16" }]
[[modbus.devices]]
device = "a3-301"
transport = "tcp"
address = "10.0.0.1"
map = "m"
poll_interval = "2s"
retries = 2
"#,
        );
        let mut polled = reading("yz", "a3-301", Kind::Smoke, 0);
        polled.source = Source::Modbus;
        reg.admit(&mut polled, 0).expect("admit");
        assert_eq!(reg.counts(12_000)[0].1.online, 1);
        assert_eq!(
            reg.counts(12_001)[0].1.offline,
            1,
            "not the 90 s of an MQTT detector"
        );
    }

    #[test]
    fn latest_fields_merge_whatever_their_order() {
        let f = |pairs: &[(&'static str, f64)]| -> Vec<(FieldName, Value)> {
            pairs
                .iter()
                .map(|(n, v)| ((*n).into(), Value::F64(*v)))
                .collect()
        };
        let mut latest = Vec::new();
        merge_latest(&mut latest, &f(&[("a", 1.0), ("b", 2.0)]), 64, Kind::Smoke);
        merge_latest(
            &mut latest,
            &f(&[("b", 3.0), ("c", 4.0), ("a", 5.0)]),
            64,
            Kind::Smoke,
        );
        merge_latest(&mut latest, &f(&[("c", 6.0)]), 64, Kind::Smoke);
        assert_eq!(latest, f(&[("a", 5.0), ("b", 3.0), ("c", 6.0)]));
    }

    #[test]
    fn a_device_changing_its_field_names_keeps_at_most_max_fields() {
        let reg = registry("[gateway]\nmax_fields = 3");
        for i in 0..10 {
            let mut r = reading("yz", "a3-301", Kind::Smoke, i);
            r.fields = vec![(format!("f{i}").into(), Value::F64(1.0))];
            reg.admit(&mut r, i).expect("admit");
        }
        let d = &reg.devices(10)[0];
        assert_eq!(d.fields.len(), 3, "{:?}", d.fields);
        // The kind's own fields still find their place.
        let mut r = reading("yz", "a3-301", Kind::Smoke, 11);
        r.fields = vec![("battery_pct".into(), Value::F64(80.0))];
        reg.admit(&mut r, 11).expect("admit");
        assert_eq!(
            reg.devices(11)[0].fields["battery_pct"],
            serde_json::json!(80.0)
        );
    }
}
