// Rotation due: active keys older than N days (default 90), each linking to its agent's panel.

import { api, path } from './api.js';
import { agentHref, badge, code, errorNotice, h, mapLimit, put, table, time } from './dom.js';

const DAY_MS = 86400 * 1000;

export async function renderRotation(view, { query, navigate }) {
  const requested = Number(query.get('older_than_days') ?? 90);
  const days = Number.isInteger(requested) && requested >= 0 && requested <= 36500 ? requested : 90;
  const input = h('input', { id: 'rotation-days', name: 'older_than_days', type: 'number', min: '0', max: '36500', step: '1', value: String(days), inputmode: 'numeric', class: 'short' });
  const form = h(
    'form',
    { class: 'inline-form', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'rotation-days' }, 'Older than (days)'), input),
    h('button', { type: 'submit' }, 'Show'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const n = Number(input.value);
    if (Number.isInteger(n) && n >= 0) {
      navigate(`#/rotation?older_than_days=${n}`);
    }
  });
  const results = h('div', { class: 'results' }, h('p', { class: 'loading' }, 'Loading keys…'));
  put(view, 
    h('div', { class: 'page-header' }, h('h1', { tabindex: '-1' }, 'Rotation due')),
    h('p', { class: 'lead' }, 'Active keys older than the given age. Rotate keys at least every 90 days, and at once after a suspected compromise.'),
    form,
    results,
  );
  let keys;
  try {
    keys = (await api.get('/v1/keys/due-for-rotation', { older_than_days: days })).keys || [];
  } catch (err) {
    put(results, errorNotice(err, 'Could not list the keys due for rotation'));
    return;
  }
  const agents = new Map();
  await mapLimit([...new Set(keys.map((k) => k.agent_id))], 6, async (id) => {
    try {
      agents.set(id, await api.get(path`/v1/agents/${id}`));
    } catch {
      agents.set(id, null);
    }
  });
  const now = Date.now();
  keys.sort((a, b) => a.created_at.localeCompare(b.created_at));
  put(results, 
    table({
      caption: `${keys.length} active key${keys.length === 1 ? '' : 's'} older than ${days} days, oldest first`,
      empty: `No active key is older than ${days} days.`,
      columns: [
        { label: 'Agent', cell: (k) => h('a', { href: agentHref(k.agent_id) }, agents.get(k.agent_id)?.name || k.agent_id), rowHeader: true },
        { label: 'Environment', cell: (k) => badge(k.environment || agents.get(k.agent_id)?.environment || '—') },
        { label: 'Key', cell: (k) => code(k.hint) },
        { label: 'Label', cell: (k) => k.label || h('span', { class: 'muted' }, '—') },
        { label: 'Created', cell: (k) => time(k.created_at) },
        { label: 'Age (days)', cell: (k) => String(Math.floor((now - new Date(k.created_at).getTime()) / DAY_MS)), class: 'num' },
        { label: 'Last used', cell: (k) => time(k.last_used_at, { relativeTo: new Date(now) }) },
        { label: 'Panel', cell: (k) => h('a', { href: agentHref(k.agent_id), 'aria-label': `Open the panel of ${agents.get(k.agent_id)?.name || k.agent_id}` }, 'Open panel') },
      ],
      rows: keys,
    }),
  );
}
