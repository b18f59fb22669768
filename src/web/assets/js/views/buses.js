/*
 * The school buses: a plain SVG drawing, no map tiles (the campus network
 * is closed), and a list with speed, passengers, door and route compliance.
 */

import { t } from '../i18n.js';
import { $, h, svg, clear, ms, fmtAgo, fmtClock, fmtTime, later } from '../dom.js';
import { state } from '../store.js';

const MAP_W = 600;
const MAP_H = 260;
const MAP_PAD = 30;        // around the drawing
const MAP_PAD_BOTTOM = 46; // room for the scale bar

const hasPos = (b) => typeof b.lat === 'number' && typeof b.lon === 'number' && Number.isFinite(b.lat) && Number.isFinite(b.lon);

function compClass(c) {
  if (!c) return 'comp-none';
  return c.state === 'ok' || c.state === 'idle' ? 'comp-ok' : 'comp-bad';
}

/** A trip's stops (planned → actual) and its episodes, under a bus. */
function tripDetail(trip) {
  if (!trip) return null;
  const stops = h('ol', { class: 'bus-stops', 'data-testid': 'bus-stops' },
    ...(trip.stops || []).map((st) => h('li', {
      class: `bus-stop${st.skipped ? ' skipped' : ''}${st.actual ? ' served' : ''}`, 'data-stop': st.stop,
    },
    h('span', { class: 'stop-name' }, st.stop), ' ',
    h('span', { class: 'muted' }, `${t('buses.planned')} ${st.planned ? fmtTime(st.planned) : '–'}`), ' ',
    st.skipped ? h('span', { class: 'stop-skipped' }, t('episode.stop_skipped'))
      : h('span', null, st.actual ? `${t('buses.actual')} ${fmtTime(st.actual)}` : ''))));
  const eps = (trip.episodes || []).map((e) => h('li', { class: `bus-episode${e.end ? '' : ' open'}`, 'data-testid': 'bus-episode', 'data-type': e.type },
    `${t(`episode.${e.type}`)} · ${fmtTime(e.start)}`,
    e.peak_kmh != null && e.limit_kmh != null ? ` · ${Math.round(e.peak_kmh)}/${Math.round(e.limit_kmh)} km/h` : '',
    e.max_distance_m != null ? ` · ${Math.round(e.max_distance_m)} m` : '',
    e.stop ? ` · ${e.stop}` : ''));
  return h('div', { class: 'bus-trip' }, stops, eps.length ? h('ul', { class: 'bus-episodes' }, ...eps) : null);
}

/** The day's report: one line per trip, and the CSV for the bureau. */
function renderReport() {
  const box = $('bus-report');
  if (!box) return;
  clear(box);
  const r = state.busReport;
  if (!r || !Array.isArray(r.trips)) return;
  box.append(h('div', { class: 'panel-head' },
    h('h3', null, t('buses.report', { d: r.date })),
    h('span', { class: 'spacer' }),
    h('a', { href: `/api/reports/bus?date=${encodeURIComponent(r.date)}&format=csv`, 'data-testid': 'bus-report-csv' }, t('buses.csv'))));
  if (!r.trips.length) box.append(h('p', { class: 'muted' }, t('buses.noTrips')));
  const rows = r.trips.map((tr) => h('tr', { 'data-testid': 'bus-report-trip' },
    h('td', null, tr.vehicle),
    h('td', null, tr.route),
    h('td', null, tr.depart_planned ? fmtTime(tr.depart_planned) : t('buses.unscheduled')),
    h('td', null, `${tr.stops.filter((st) => st.actual).length}/${tr.stops.length}`),
    h('td', null, tr.episodes.length ? tr.episodes.map((e) => t(`episode.${e.type}`)).join('、') : t('comp.ok'))));
  if (rows.length) {
    box.append(h('table', { class: 'bus-report-table' },
      h('thead', null, h('tr', null, ...['buses.vehicle', 'buses.routeCol', 'buses.depart', 'buses.stopsCol', 'buses.episodes'].map((k) => h('th', null, t(k))))),
      h('tbody', null, ...rows)));
  }
}

function busLabel(b) {
  // "校车7号 (川L·0707)" -> "校车7号": short enough for the map.
  const name = (b.name || '').split(/[\svg(（]/)[0];
  return name && name.length <= 8 ? name : b.id;
}

/**
 * Local equirectangular projection: metres east/north of the box's corner,
 * scaled to fit the drawing. Exact enough for a town-sized area.
 */
function projection(points) {
  let minLat = Infinity, maxLat = -Infinity, minLon = Infinity, maxLon = -Infinity;
  for (const [lat, lon] of points) {
    minLat = Math.min(minLat, lat); maxLat = Math.max(maxLat, lat);
    minLon = Math.min(minLon, lon); maxLon = Math.max(maxLon, lon);
  }
  const midLat = (minLat + maxLat) / 2;
  const mPerLat = 111320;
  const mPerLon = 111320 * Math.cos((midLat * Math.PI) / 180);
  // At least 600 m across, so one bus alone is not drawn at an absurd zoom.
  const wM = Math.max((maxLon - minLon) * mPerLon, 600);
  const hM = Math.max((maxLat - minLat) * mPerLat, 300);
  const innerH = MAP_H - MAP_PAD - MAP_PAD_BOTTOM;
  const scale = Math.min((MAP_W - 2 * MAP_PAD) / wM, innerH / hM); // px per metre
  const cx = (minLon + maxLon) / 2;
  const cy = (minLat + maxLat) / 2;
  const midY = MAP_PAD + innerH / 2;
  return {
    scale,
    xy(lat, lon) {
      return [MAP_W / 2 + (lon - cx) * mPerLon * scale, midY - (lat - cy) * mPerLat * scale];
    },
  };
}

/** The largest "nice" length that fits in a fifth of the drawing. */
function niceLength(pxPerMetre) {
  const target = MAP_W / 5 / pxPerMetre;
  const steps = [50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 50000, 100000];
  let best = steps[0];
  for (const v of steps) if (v <= target) best = v;
  return best;
}

export function renderBuses() {
  drawBusMap();
  const list = $('bus-list');
  clear(list);
  const buses = state.buses.slice().sort((a, b) => busLabel(a).localeCompare(busLabel(b), 'zh-CN', { numeric: true }));
  if (!buses.length) list.append(h('li', { class: 'empty-note muted' }, t('buses.none')));
  const routeName = new Map(state.routes.map((r) => [r.id, r.name]));
  for (const b of buses) {
    const comp = b.compliance;
    const seen = ms(b.last_seen);
    const stats = [];
    if (typeof b.speed_kmh === 'number') stats.push(h('span', { class: 'bus-speed' }, t('buses.speed', { v: Math.round(b.speed_kmh) })));
    if (typeof b.passengers === 'number') stats.push(h('span', { class: 'bus-pax' }, t('buses.passengers', { n: Math.round(b.passengers) })));
    // An open door matters while the bus moves.
    const moving = typeof b.speed_kmh === 'number' && b.speed_kmh > 3;
    if (b.door_open === true) stats.push(h('span', { class: `bus-door open${moving && b.online ? ' moving' : ''}` }, t('buses.doorOpen')));
    else if (b.door_open === false) stats.push(h('span', { class: 'bus-door' }, t('buses.doorClosed')));
    const route = b.route_id ? t('buses.route', { r: routeName.get(b.route_id) ? `${b.route_id} ${routeName.get(b.route_id)}` : b.route_id }) : t('buses.noRoute');
    list.append(h('li', {
      class: `bus-item ${compClass(comp)}${b.online ? '' : ' offline'}`,
      'data-testid': 'bus-item', 'data-bus-id': b.id, 'data-compliance': comp ? comp.state : 'none', 'data-online': b.online ? 'true' : 'false',
    },
    h('span', { class: 'bus-marker', 'aria-hidden': 'true' }),
    h('div', { class: 'bus-head' },
      h('span', { class: 'bus-name' }, b.name || b.id),
      h('span', { class: 'bus-route muted' }, route)),
    h('div', { class: 'bus-stats' }, stats.length ? stats : h('span', { class: 'muted' }, t('buses.noPosition'))),
    h('div', { class: 'bus-comp', 'data-testid': 'bus-compliance' },
      h('span', { class: 'comp-glyph', 'aria-hidden': 'true' }, comp ? (comp.state === 'ok' ? '✓' : '⚠') : '–'),
      comp ? (comp.state === 'ok' || comp.state === 'idle' ? t(`comp.${comp.state}`) : t(`episode.${comp.state}`)) : t('comp.none'),
      comp && comp.detail ? h('span', { class: 'comp-detail muted' }, ` · ${comp.detail}`) : null),
    h('div', { class: 'bus-seen muted' },
      b.online ? null : h('span', { class: 'offline-tag' }, `${t('buses.offline')} · `),
      seen === null ? t('ago.never') : h('span', { class: 'js-ago', 'data-at': seen }, fmtAgo(seen))),
    tripDetail(comp && comp.trip)));
  }
  if (state.badWeather) list.prepend(h('li', { class: 'bus-weather', 'data-testid': 'bus-weather' }, t('buses.badWeather')));
  renderReport();
  $('buses-updated').textContent = state.busesAt ? t('alarms.updated', { t: fmtClock(new Date(state.busesAt)) }) : '';
}

function drawBusMap() {
  const map = $('bus-map');
  clear(map);
  const buses = state.buses.filter(hasPos);
  const routes = state.routes.filter((r) => Array.isArray(r.points) && r.points.length > 1);
  const points = [];
  for (const r of routes) for (const p of r.points) if (Number.isFinite(p[0]) && Number.isFinite(p[1])) points.push(p);
  for (const z of state.zones || []) for (const p of z.points) if (Number.isFinite(p[0]) && Number.isFinite(p[1])) points.push(p);
  for (const b of buses) points.push([b.lat, b.lon]);

  map.append(svg('rect', { class: 'map-bg', x: 0, y: 0, width: MAP_W, height: MAP_H, rx: 6 }));
  if (!points.length) {
    map.append(svg('text', { class: 'map-empty', x: MAP_W / 2, y: MAP_H / 2, 'text-anchor': 'middle' }, t('buses.noPosition')));
    return;
  }
  const proj = projection(points);
  const step = niceLength(proj.scale);
  const stepPx = step * proj.scale;

  // A faint grid at the scale bar's spacing stands in for a base map.
  const grid = svg('g', { class: 'map-grid' });
  for (let x = MAP_W / 2 % stepPx; x < MAP_W; x += stepPx) grid.append(svg('line', { x1: x, y1: 0, x2: x, y2: MAP_H }));
  for (let y = MAP_H / 2 % stepPx; y < MAP_H; y += stepPx) grid.append(svg('line', { x1: 0, y1: y, x2: MAP_W, y2: y }));
  map.append(grid);

  // Labels are placed one by one where they overlap nothing drawn so far.
  const labels = new LabelPlacer();
  const busXY = buses.map((b) => proj.xy(b.lat, b.lon));
  for (const [x, y] of busXY) labels.block(x - 10, y - 10, x + 10, y + 10);
  labels.block(0, MAP_H - 36, 16 + stepPx + 10, MAP_H); // scale bar
  labels.block(MAP_W - 40, 0, MAP_W, 50);               // north arrow

  // Speed zones under the routes, stops on them.
  for (const z of state.zones || []) {
    const zp = z.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])).map((p) => proj.xy(p[0], p[1]));
    if (zp.length < 3) continue;
    map.append(svg('polygon', { class: 'map-zone', 'data-zone': z.zone, points: zp.map((p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`).join(' ') },
      svg('title', null, `${z.zone} ${z.limit} km/h`)));
  }
  routes.forEach((r, i) => {
    const pts = r.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])).map((p) => proj.xy(p[0], p[1]));
    const d = pts.map((p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`).join(' ');
    map.append(svg('polyline', { class: `map-route route-${i % 4}`, points: d, 'data-route-id': r.id }));
    const text = r.id + (r.name ? ` ${r.name}` : '');
    const [lx, ly] = pts[0];
    const at = labels.place(lx, ly, text, 13, [[6, -7, 'start'], [-6, -7, 'end'], [6, 16, 'start'], [-6, 16, 'end']]);
    map.append(svg('text', { class: `map-route-label route-${i % 4}`, x: at.x, y: at.y, 'text-anchor': at.anchor }, text));
    for (const st of r.stops || []) {
      const [sx, sy] = proj.xy(st.lat, st.lon);
      map.append(svg('circle', { class: `map-stop route-${i % 4}`, cx: sx.toFixed(1), cy: sy.toFixed(1), r: 4, 'data-stop': st.stop, 'data-testid': 'map-stop' },
        svg('title', null, `${st.stop} (+${Math.round(st.planned_offset_s / 60)} min)`)));
    }
  });

  buses.forEach((b, i) => {
    const [x, y] = busXY[i];
    const g = svg('g', {
      class: `map-bus ${compClass(b.compliance)}${b.online ? '' : ' offline'}`,
      transform: `translate(${x.toFixed(1)} ${y.toFixed(1)})`, 'data-bus-id': b.id,
    });
    g.append(svg('title', null, `${b.name || b.id}`));
    if (typeof b.heading_deg === 'number' && b.online) {
      // Heading: 0° is north, clockwise, which is SVG's rotate() on a y-down canvas.
      g.append(svg('path', { class: 'bus-heading', d: 'M0 -20 L6 -10 L-6 -10 Z', transform: `rotate(${Math.round(b.heading_deg)})` }));
    }
    g.append(svg('circle', { class: 'bus-dot', r: 8 }));
    // First choice: the side the bus is not heading to (the arrow is there).
    const east = typeof b.heading_deg === 'number' && b.online && Math.sin((b.heading_deg * Math.PI) / 180) > 0.35;
    const right = [[14, 5, 'start'], [14, 22, 'start'], [14, -11, 'start']];
    const left = [[-14, 5, 'end'], [-14, 22, 'end'], [-14, -11, 'end']];
    const text = busLabel(b);
    const at = labels.place(x, y, text, 15, east ? [...left, ...right] : [...right, ...left]);
    g.append(svg('text', { class: 'bus-label', x: (at.x - x).toFixed(1), y: (at.y - y).toFixed(1), 'text-anchor': at.anchor }, text));
    map.append(g);
  });

  // Scale bar and north arrow.
  const sx = 16;
  const sy = MAP_H - 16;
  map.append(svg('g', { class: 'map-scale' },
    svg('path', { d: `M${sx} ${sy - 5} V${sy} H${sx + stepPx} V${sy - 5}` }),
    svg('text', { x: sx + stepPx / 2, y: sy - 8, 'text-anchor': 'middle' },
      step >= 1000 ? t('map.km', { n: step / 1000 }) : t('map.m', { n: step }))));
  map.append(svg('g', { class: 'map-north', transform: `translate(${MAP_W - 22} 26)` },
    svg('path', { d: 'M0 -14 L6 4 L0 0 L-6 4 Z' }),
    svg('text', { x: 0, y: 18, 'text-anchor': 'middle' }, t('map.north'))));
}

/** Greedy label placement: the first candidate spot that overlaps nothing placed yet. */
class LabelPlacer {
  constructor() { this.boxes = []; }

  block(x1, y1, x2, y2) { this.boxes.push({ x1, y1, x2, y2 }); }

  /** `spots` are [dx, dy, anchor] from (x, y); returns the chosen {x, y, anchor}. */
  place(x, y, text, px, spots) {
    // Rough width: CJK characters are square, Latin ones about 0.6 em.
    let w = 0;
    for (const ch of text) w += ch.codePointAt(0) > 0x2e80 ? px : px * 0.6;
    const boxFor = ([dx, dy, anchor]) => {
      const tx = x + dx;
      const ty = y + dy;
      const x1 = anchor === 'end' ? tx - w : tx;
      return { x: tx, y: ty, anchor, box: { x1, y1: ty - px, x2: x1 + w, y2: ty + 3 } };
    };
    const fits = (b) => b.x1 >= 2 && b.x2 <= MAP_W - 2 && b.y1 >= 2 && b.y2 <= MAP_H - 2 &&
      !this.boxes.some((o) => b.x1 < o.x2 && b.x2 > o.x1 && b.y1 < o.y2 && b.y2 > o.y1);
    const candidates = spots.map(boxFor);
    const chosen = candidates.find((c) => fits(c.box)) || candidates.find((c) => c.box.x1 >= 2 && c.box.x2 <= MAP_W - 2) || candidates[0];
    this.boxes.push(chosen.box);
    return chosen;
  }
}

/** A `bus` stream event: a new position. */
export function onBusEvent(ev) {
  let b = state.buses.find((x) => x.id === ev.id && x.site === ev.site);
  if (!b) {
    b = { id: ev.id, site: ev.site, name: null, compliance: null };
    state.buses.push(b);
  }
  for (const k of ['lat', 'lon', 'speed_kmh', 'heading_deg', 'passengers', 'door_open', 'route_id']) {
    if (ev[k] !== undefined && ev[k] !== null) b[k] = ev[k];
  }
  if (ev.ts) b.last_seen = ev.ts;
  b.online = true;
  later('buses', renderBuses, 500);
}
