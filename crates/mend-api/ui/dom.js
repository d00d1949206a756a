// Building the page from data: elements and text nodes only. Nothing here parses markup, so a service's
// log line or an event message is always text, whatever it contains.

/** An element `tag` with attributes `attrs` (`class`, `title`, `data-*`, properties for `hidden` and
 * `disabled`; functions under `on*` become listeners) and children (nodes, or strings made text). */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (name === 'hidden' || name === 'disabled' || name === 'open') {
      element[name] = Boolean(value);
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of `element`. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

const SVG = 'http://www.w3.org/2000/svg';

/** A sparkline of `values` (numbers or null) as an SVG polyline, `width` by `height` pixels. */
export function sparkline(values, width = 90, height = 22) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  const points = values.map((v, i) => [i, v]).filter(([, v]) => Number.isFinite(v));
  if (points.length < 2) return svg;
  const max = Math.max(...points.map(([, v]) => v));
  const min = Math.min(...points.map(([, v]) => v));
  const span = max - min || Math.abs(max) || 1;
  const last = values.length - 1 || 1;
  const coords = points.map(([i, v]) => {
    const x = (i / last) * (width - 2) + 1;
    const y = height - 2 - ((v - min) / span) * (height - 4);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute('points', coords.join(' '));
  svg.append(line);
  return svg;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** `31457280` → `30.0 MiB`, as mend's CLI writes bytes. */
export function bytes(n) {
  if (!Number.isFinite(n)) return '';
  let idx = 0;
  while (Math.abs(n) >= 1024 && idx < UNITS.length - 1) {
    n /= 1024;
    idx += 1;
  }
  return idx === 0 ? `${n} B` : `${n.toFixed(1)} ${UNITS[idx]}`;
}

const COMPACT = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 2 });

/** A chart axis' number in the unit its metric's name says (`_bytes`, `_seconds`), else compact (`1.2K`). */
export function axisValue(name, value) {
  if (value === null || !Number.isFinite(value)) return '';
  if (/_bytes(_total)?$/.test(name)) return bytes(value);
  if (/_seconds(_total)?$/.test(name) && Math.abs(value) < 1 && value !== 0) return `${+(value * 1000).toPrecision(3)} ms`;
  if (/_seconds(_total)?$/.test(name)) return `${COMPACT.format(value)} s`;
  return COMPACT.format(value);
}

/** Seconds → `42s`, `3m 5s`, `2h 3m`, `4d 2h`. */
export function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '';
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** An RFC 3339 time as a `<time>` element: the local clock time, the full time on hover. */
export function time(rfc3339) {
  if (!rfc3339) return '';
  const at = new Date(rfc3339);
  const today = new Date().toDateString() === at.toDateString();
  const text = today ? at.toLocaleTimeString() : at.toLocaleString();
  return h('time', { datetime: rfc3339, title: rfc3339 }, text);
}

/** A small coloured label. */
export function badge(text, kind = text) {
  return h('span', { class: `badge badge-${String(kind).replace(/[^a-z_-]/gi, '')}` }, text);
}
