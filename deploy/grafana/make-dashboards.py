#!/usr/bin/env python3
"""Writes the two Grafana dashboards of Campus Gateway from one panel list,
so the InfluxQL (InfluxDB 1.x) and Flux (InfluxDB 2.x) variants show the
same things:  python3 deploy/grafana/make-dashboards.py
tests/dashboard.rs runs every InfluxQL query of the result against a real
InfluxDB 1.x."""
import json, os

HERE = os.path.dirname(os.path.abspath(__file__))

def flux(measurement, field, agg, by, extra=""):
    return (
        'from(bucket: v.defaultBucket)\n'
        '  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n'
        f'  |> filter(fn: (r) => r._measurement == "{measurement}" and r._field == "{field}"){extra}\n'
        f'  |> group(columns: ["{by}"])\n'
        f'  |> aggregateWindow(every: v.windowPeriod, fn: {agg}, createEmpty: false)'
    )

# (title, unit, [(influxql, flux, legend)], kind) — kind: timeseries or state
PANELS = [
    ("Smoke obscuration by building (max)", "percent", [(
        'SELECT max("obscuration_pct_m") FROM "smoke" WHERE $timeFilter GROUP BY time($__interval), "building" fill(none)',
        flux("smoke", "obscuration_pct_m", "max", "building"), "$tag_building")], "timeseries"),
    ("Smoke detector battery by building (lowest)", "percent", [(
        'SELECT min("battery_pct") FROM "smoke" WHERE $timeFilter GROUP BY time($__interval), "building" fill(none)',
        flux("smoke", "battery_pct", "min", "building"), "$tag_building")], "timeseries"),
    ("Gates: forced open and held open", "short", [
        ('SELECT count("event") AS "forced_open" FROM "gate" WHERE $timeFilter AND "event" = \'forced_open\' GROUP BY time($__interval), "device" fill(none)',
         flux("gate", "event", "count", "device", '\n  |> filter(fn: (r) => r._value == "forced_open")'), "forced $tag_device"),
        ('SELECT count("event") AS "held_open" FROM "gate" WHERE $timeFilter AND "event" = \'held_open\' GROUP BY time($__interval), "device" fill(none)',
         flux("gate", "event", "count", "device", '\n  |> filter(fn: (r) => r._value == "held_open")'), "held $tag_device"),
    ], "bars"),
    ("Canteen duct temperature", "celsius", [(
        'SELECT max("duct_temp_c") FROM "kitchen" WHERE $timeFilter GROUP BY time($__interval), "device" fill(none)',
        flux("kitchen", "duct_temp_c", "max", "device"), "$tag_device")], "timeseries"),
    ("Canteen grease (oil fume)", "conmgm3", [(
        'SELECT mean("grease_mg_m3") FROM "kitchen" WHERE $timeFilter GROUP BY time($__interval), "device" fill(none)',
        flux("kitchen", "grease_mg_m3", "mean", "device"), "$tag_device")], "timeseries"),
    ("Chemical cabinets: VOC", "ppm", [(
        'SELECT max("voc_ppm") FROM "labcab" WHERE $timeFilter GROUP BY time($__interval), "device" fill(none)',
        flux("labcab", "voc_ppm", "max", "device"), "$tag_device")], "timeseries"),
    ("Chemical cabinets: door open", "bool_on_off", [(
        'SELECT last("door_open") FROM "labcab" WHERE $timeFilter GROUP BY time($__interval), "device" fill(none)',
        flux("labcab", "door_open", "last", "device"), "$tag_device")], "state"),
    ("School buses: speed", "velocitykmh", [(
        'SELECT max("speed_kmh") FROM "bus" WHERE $timeFilter GROUP BY time($__interval), "device" fill(none)',
        flux("bus", "speed_kmh", "max", "device"), "$tag_device")], "timeseries"),
    # The gateway's own /metrics, scraped into InfluxDB by Telegraf
    # (inputs.prometheus, metric_version = 2: measurement `prometheus`).
    ("Gateway: messages in per second", "mps", [(
        'SELECT non_negative_derivative(max("campusgw_messages_received_total"), 1s) FROM "prometheus" WHERE $timeFilter GROUP BY time($__interval), "source" fill(none)',
        flux("prometheus", "campusgw_messages_received_total", "max", "source") + '\n  |> derivative(unit: 1s, nonNegative: true)', "$tag_source")], "timeseries"),
    ("Gateway: points written to InfluxDB per second", "wps", [(
        'SELECT non_negative_derivative(max("campusgw_points_written_total"), 1s) FROM "prometheus" WHERE $timeFilter GROUP BY time($__interval) fill(none)',
        flux("prometheus", "campusgw_points_written_total", "max", "_measurement") + '\n  |> derivative(unit: 1s, nonNegative: true)', "points")], "timeseries"),
    ("Gateway: spool backlog (points not yet in InfluxDB)", "short", [(
        'SELECT max("campusgw_spool_points") FROM "prometheus" WHERE $timeFilter GROUP BY time($__interval) fill(none)',
        flux("prometheus", "campusgw_spool_points", "max", "_measurement"), "backlog")], "timeseries"),
]

ALARM_TABLE = (
    'SELECT "action", "state", "value", "rule", "device", "severity", "site" FROM "alarm" WHERE $timeFilter ORDER BY time DESC LIMIT 500',
    'from(bucket: v.defaultBucket)\n'
    '  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n'
    '  |> filter(fn: (r) => r._measurement == "alarm")\n'
    '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
    '  |> group()\n'
    '  |> keep(columns: ["_time", "rule", "device", "severity", "site", "action", "state", "value"])\n'
    '  |> sort(columns: ["_time"], desc: true)\n'
    '  |> limit(n: 500)',
)
ALARM_ANNOTATION = (
    'SELECT "action", "state", "rule", "device" FROM "alarm" WHERE $timeFilter',
    ALARM_TABLE[1],
)


def build(lang):
    influxql = lang == "influxql"
    ds = {"type": "influxdb", "uid": "${datasource}"}
    panels = []
    y = 0
    for i, (title, unit, targets, kind) in enumerate(PANELS):
        t = []
        for j, (iq, fx, legend) in enumerate(targets):
            if influxql:
                t.append({"refId": chr(65 + j), "datasource": ds, "rawQuery": True,
                          "resultFormat": "time_series", "query": iq, "alias": legend})
            else:
                t.append({"refId": chr(65 + j), "datasource": ds, "query": fx})
        ptype = {"timeseries": "timeseries", "bars": "timeseries", "state": "state-timeline"}[kind]
        custom = {"drawStyle": "bars", "fillOpacity": 80} if kind == "bars" else {}
        panels.append({
            "id": i + 1, "type": ptype, "title": title, "datasource": ds,
            "gridPos": {"x": (i % 2) * 12, "y": y, "w": 12, "h": 8},
            "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": t,
        })
        if i % 2 == 1:
            y += 8
    y += 8
    tq = ALARM_TABLE[0] if influxql else ALARM_TABLE[1]
    target = ({"refId": "A", "datasource": ds, "rawQuery": True, "resultFormat": "table", "query": tq}
              if influxql else {"refId": "A", "datasource": ds, "query": tq})
    panels.append({
        "id": len(PANELS) + 1, "type": "table", "title": "Alarms (the alarm measurement: every change)",
        "datasource": ds, "gridPos": {"x": 0, "y": y, "w": 24, "h": 10},
        "fieldConfig": {"defaults": {}, "overrides": []}, "options": {"showHeader": True},
        "targets": [target],
    })
    annotation = {
        "name": "Alarms", "enable": True, "iconColor": "red", "datasource": ds,
    }
    if influxql:
        annotation.update({"query": ALARM_ANNOTATION[0], "textColumn": "action",
                           "tagsColumn": "rule,device,state"})
    else:
        annotation.update({"target": {"query": ALARM_ANNOTATION[1], "refId": "Anno"}})
    label = "InfluxQL (InfluxDB 1.x)" if influxql else "Flux (InfluxDB 2.x)"
    return {
        "uid": f"campusgw-{lang}",
        "title": f"Campus Gateway — {label}",
        "tags": ["campusgw", lang],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "label": "InfluxDB", "type": "datasource",
            "query": "influxdb",
            # Chosen at import; provisioned by deploy/grafana/provisioning.
            "current": {"text": f"campusgw-{lang}", "value": f"campusgw-{lang}"},
            "regex": "", "hide": 0,
        }]},
        "annotations": {"list": [annotation]},
        "panels": panels,
    }


for lang in ("influxql", "flux"):
    path = os.path.join(HERE, "dashboards", f"campusgw-{lang}.json")
    with open(path, "w") as f:
        json.dump(build(lang), f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(path)
