// Usage: verification outcomes per time bucket as a stacked bar chart (inline SVG built with
// DOM calls) and the addresses the verifications came from.

import { api } from './api.js';
import { add, errorNotice, h, notice, put, svg, table, uid } from './dom.js';

const OUTCOMES = [
  ['VALID', 'valid'],
  ['RATE_LIMITED', 'rate limited'],
  ['REVOKED', 'revoked'],
  ['EXPIRED', 'expired'],
  ['COMPROMISED', 'compromised'],
];

const RANGES = [
  ['hour-24', 'Last 24 hours, by hour', 'hour', 24 * 3600],
  ['minute-60', 'Last hour, by minute', 'minute', 3600],
  ['hour-168', 'Last 7 days, by hour', 'hour', 7 * 24 * 3600],
];

const WIDTH = 960;
const HEIGHT = 220;
const PAD = { left: 44, right: 8, top: 12, bottom: 28 };

const timeOnly = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayTime = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });

function isoSeconds(date) {
  return date.toISOString().replace(/\.\d+Z$/, 'Z');
}

function bucketLabel(start, granularity) {
  const d = new Date(start);
  return granularity === 'minute' ? timeOnly.format(d) : dayTime.format(d);
}

function niceMax(n) {
  if (n <= 4) {
    return 4;
  }
  const magnitude = 10 ** Math.floor(Math.log10(n));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * magnitude >= n) {
      return step * magnitude;
    }
  }
  return 10 * magnitude;
}

export function chart(buckets, granularity) {
  const titleId = uid('chart-title');
  const totals = Object.fromEntries(OUTCOMES.map(([k]) => [k, 0]));
  let peak = 0;
  for (const b of buckets) {
    let sum = 0;
    for (const [k] of OUTCOMES) {
      const n = Number(b.counts?.[k] || 0);
      totals[k] += n;
      sum += n;
    }
    peak = Math.max(peak, sum);
  }
  const top = niceMax(peak);
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const barW = plotW / Math.max(1, buckets.length);
  const y = (n) => PAD.top + plotH - (n / top) * plotH;
  const summary = OUTCOMES.map(([k, label]) => `${totals[k]} ${label}`).join(', ');

  const root = svg('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: 'chart', role: 'img', 'aria-labelledby': titleId });
  add(root, svg('title', { id: titleId }, `Verifications per ${granularity}: ${summary}`));
  for (const tick of [0, top / 2, top]) {
    add(root, 
      svg('line', { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(tick), y2: y(tick), class: 'grid' }),
      svg('text', { x: PAD.left - 6, y: y(tick) + 4, class: 'axis', 'text-anchor': 'end' }, String(tick)),
    );
  }
  buckets.forEach((b, i) => {
    let base = 0;
    const x = PAD.left + i * barW;
    const group = svg('g', {});
    const parts = [];
    for (const [k, label] of OUTCOMES) {
      const n = Number(b.counts?.[k] || 0);
      if (!n) {
        continue;
      }
      parts.push(`${n} ${label}`);
      add(group, 
        svg('rect', {
          x: x + Math.min(1, barW * 0.1),
          width: Math.max(0.5, barW - Math.min(2, barW * 0.2)),
          y: y(base + n),
          height: Math.max(0.5, y(base) - y(base + n)),
          class: `bar bar-${k.toLowerCase()}`,
        }),
      );
      base += n;
    }
    if (parts.length) {
      group.prepend(svg('title', {}, `${bucketLabel(b.start, granularity)}: ${parts.join(', ')}`));
      add(root, group);
    }
  });
  const labelAt = [0, Math.floor(buckets.length / 2), buckets.length - 1];
  for (const [i, anchor] of [
    [labelAt[0], 'start'],
    [labelAt[1], 'middle'],
    [labelAt[2], 'end'],
  ]) {
    if (buckets[i]) {
      const x = anchor === 'start' ? PAD.left : anchor === 'end' ? WIDTH - PAD.right : PAD.left + (i + 0.5) * barW;
      add(root, svg('text', { x, y: HEIGHT - 8, class: 'axis', 'text-anchor': anchor }, bucketLabel(buckets[i].start, granularity)));
    }
  }
  const legend = h(
    'ul',
    { class: 'legend' },
    OUTCOMES.map(([k, label]) => h('li', {}, h('span', { class: `swatch bar-${k.toLowerCase()}`, 'aria-hidden': 'true' }), `${label}: ${totals[k]}`)),
  );
  return { node: h('figure', { class: 'chart-figure' }, root, h('figcaption', {}, legend)), totals };
}

function sources(buckets) {
  const byAddress = new Map();
  for (const b of buckets) {
    for (const s of b.sources || []) {
      byAddress.set(s.address, (byAddress.get(s.address) || 0) + Number(s.count || 0));
    }
  }
  return [...byAddress.entries()].sort((a, b) => b[1] - a[1]).map(([address, count]) => ({ address, count }));
}

// The usage section for `path` (/v1/agents/{id}/usage or /v1/self/usage).
export function usageSection(path) {
  const rangeId = uid('usage-range');
  const range = h('select', { id: rangeId }, RANGES.map(([v, label]) => h('option', { value: v }, label)));
  const body = h('div', { class: 'usage-body', 'aria-live': 'polite' });
  const section = h(
    'section',
    { class: 'card', 'aria-labelledby': `${rangeId}-h` },
    h('div', { class: 'section-header' }, h('h2', { id: `${rangeId}-h` }, 'Usage'), h('div', { class: 'field inline' }, h('label', { for: rangeId }, 'Range'), range)),
    body,
  );
  async function load() {
    const [, , granularity, seconds] = RANGES.find(([v]) => v === range.value);
    put(body, h('p', { class: 'loading' }, 'Loading usage…'));
    let data;
    try {
      data = await api.get(path, { granularity, since: isoSeconds(new Date(Date.now() - seconds * 1000)) });
    } catch (err) {
      if (err.status === 404 && err.code === 'not_found') {
        put(body, h('p', { class: 'empty' }, 'This keyledger does not report usage yet.'));
      } else if (err.status === 403) {
        put(body, h('p', { class: 'empty' }, 'Usage needs the audit scope.'));
      } else {
        put(body, errorNotice(err, 'Could not load usage'));
      }
      return;
    }
    const buckets = Array.isArray(data?.buckets) ? data.buckets : [];
    const { node, totals } = chart(buckets, granularity);
    const list = sources(buckets);
    const any = Object.values(totals).some((n) => n > 0);
    put(body, 
      any ? node : h('p', { class: 'empty' }, 'No verifications in this range.'),
      h('h3', {}, 'Sources'),
      table({
        caption: 'Addresses that presented this agent\u2019s keys',
        empty: 'No sources in this range.',
        columns: [
          { label: 'Address', cell: (s) => h('code', {}, s.address), rowHeader: true },
          { label: 'Verifications', cell: (s) => String(s.count), class: 'num' },
        ],
        rows: list.slice(0, 50),
      }),
      list.length > 50 ? notice('info', `${list.length - 50} more addresses not shown.`) : null,
    );
  }
  range.addEventListener('change', load);
  load();
  return section;
}
