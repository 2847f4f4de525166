// Activity: the audit timeline (GET /v1/audit), for one agent or across all of them,
// filtered by type, key, actor (and agent), paged with next_cursor.

import { api, path } from './api.js';
import { add, agentHref, badge, busy, code, errorNotice, h, mapLimit, put, table, time } from './dom.js';

export const EVENT_TYPES = [
  'agent.registered',
  'agent.rate_limit_changed',
  'key.created',
  'key.rotated',
  'key.revoked',
  'key.expired',
  'key.compromised',
  'webhook.delivery_recorded',
  'token.created',
  'token.revoked',
];

const PAGE_SIZES = ['50', '100', '250', '1000'];
const agentNames = new Map();

function summarize(value) {
  if (value === null || value === undefined) {
    return '—';
  }
  if (Array.isArray(value)) {
    return value.map(summarize).join(', ');
  }
  if (typeof value === 'object') {
    return JSON.stringify(value);
  }
  return String(value);
}

function details(event) {
  const entries = Object.entries(event.data || {}).filter(
    ([k, v]) => k !== 'agent_id' && !(k === 'key_id' && event.key_id) && v !== '' && v !== null && !(Array.isArray(v) && !v.length),
  );
  if (!entries.length) {
    return h('span', { class: 'muted' }, '—');
  }
  return h(
    'dl',
    { class: 'event-data' },
    entries.map(([k, v]) => {
      const text = summarize(v);
      return h('div', {}, h('dt', {}, k), h('dd', { title: text.length > 160 ? text : null }, text.length > 160 ? `${text.slice(0, 160)}…` : text));
    }),
  );
}

async function nameAgents(ids) {
  const unknown = [...new Set(ids)].filter((id) => id && !agentNames.has(id));
  await mapLimit(unknown, 6, async (id) => {
    try {
      agentNames.set(id, (await api.get(path`/v1/agents/${id}`)).name);
    } catch {
      agentNames.set(id, null);
    }
  });
}

function filterForm({ query, agentScoped, onApply }) {
  const input = (id, name, label, value, extra = {}) =>
    h('div', { class: 'field' }, h('label', { for: id }, label), h('input', { id, name, value: value || '', autocomplete: 'off', spellcheck: 'false', ...extra }));
  const type = h('select', { id: 'activity-type', name: 'type' }, h('option', { value: '' }, 'All types'), EVENT_TYPES.map((t) => h('option', { value: t, selected: t === query.get('type') }, t)));
  const order = h(
    'select',
    { id: 'activity-order', name: 'order' },
    [
      ['desc', 'Newest first'],
      ['asc', 'Oldest first'],
    ].map(([v, l]) => h('option', { value: v, selected: v === (query.get('order') || 'desc') }, l)),
  );
  const limit = h('select', { id: 'activity-limit', name: 'limit' }, PAGE_SIZES.map((v) => h('option', { value: v, selected: v === (query.get('limit') || '100') }, v)));
  const form = h(
    'form',
    { class: 'filters', role: 'search', novalidate: true, 'aria-label': 'Filter activity' },
    h('div', { class: 'field' }, h('label', { for: 'activity-type' }, 'Type'), type),
    input('activity-key', 'key_id', 'Key ID', query.get('key_id'), { placeholder: 'key_…' }),
    agentScoped ? null : input('activity-agent', 'agent_id', 'Agent ID', query.get('agent_id'), { placeholder: 'agt_…' }),
    input('activity-actor', 'actor', 'Actor', query.get('actor')),
    h('div', { class: 'field' }, h('label', { for: 'activity-order' }, 'Order'), order),
    h('div', { class: 'field' }, h('label', { for: 'activity-limit' }, 'Per page'), limit),
    h('div', { class: 'field field-button' }, h('button', { type: 'submit' }, 'Apply')),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) {
      if (String(v).trim()) {
        params.set(k, String(v).trim());
      }
    }
    onApply(params.toString());
  });
  return form;
}

async function timeline(container, { query, agentId, navigate, base }) {
  const filters = {
    agent_id: agentId || query.get('agent_id') || undefined,
    type: query.get('type') || undefined,
    key_id: query.get('key_id') || undefined,
    actor: query.get('actor') || undefined,
    order: query.get('order') === 'asc' ? 'asc' : 'desc',
    limit: PAGE_SIZES.includes(query.get('limit')) ? query.get('limit') : '100',
  };
  const events = [];
  let cursor;
  let keyHints = new Map();
  if (agentId) {
    try {
      keyHints = new Map(((await api.get(path`/v1/agents/${agentId}/keys`)).keys || []).map((k) => [k.key_id, k.hint]));
    } catch {
      // Hints are a convenience: key ids are shown instead.
    }
  }
  const results = h('div', { class: 'results' });
  const more = h('button', { type: 'button' }, 'Load more');
  const status = h('p', { class: 'muted', role: 'status' });
  add(container, 
    filterForm({ query, agentScoped: Boolean(agentId), onApply: (qs) => navigate(`${base}${qs ? `?${qs}` : ''}`) }),
    results,
    h('div', { class: 'pager' }, more, status),
  );

  function draw() {
    const columns = [
      { label: '#', cell: (e) => String(e.position), class: 'num' },
      { label: 'Time', cell: (e) => time(e.occurred_at, { seconds: true }) },
      { label: 'Type', cell: (e) => badge(e.type, e.type.split('.')[1]) },
    ];
    if (!agentId) {
      columns.push({
        label: 'Agent',
        cell: (e) => (e.agent_id ? h('a', { href: agentHref(e.agent_id) }, agentNames.get(e.agent_id) || e.agent_id) : h('span', { class: 'muted' }, '—')),
      });
    }
    columns.push(
      { label: 'Key', cell: (e) => (e.key_id ? code(keyHints.get(e.key_id) || e.key_id) : h('span', { class: 'muted' }, '—')) },
      { label: 'Actor', cell: (e) => h('span', { class: 'actor' }, e.actor) },
      { label: 'Details', cell: details },
    );
    put(results, 
      table({
        caption: `Audit events${agentId ? ' of this agent' : ''}, ${filters.order === 'asc' ? 'oldest' : 'newest'} first`,
        empty: 'No events match these filters.',
        columns,
        rows: events,
        rowProps: (e) => ({ 'data-type': e.type, 'data-position': String(e.position) }),
      }),
    );
    more.hidden = !cursor;
    status.textContent = `${events.length} event${events.length === 1 ? '' : 's'} shown${cursor ? '' : ', no more'}.`;
  }

  async function loadPage() {
    const data = await api.get('/v1/audit', { ...filters, cursor });
    const page = data.events || [];
    if (!agentId) {
      await nameAgents(page.map((e) => e.agent_id));
    }
    events.push(...page);
    cursor = data.next_cursor;
    draw();
  }

  more.addEventListener('click', async () => {
    try {
      await busy(more, loadPage);
    } catch (err) {
      put(status, errorNotice(err, 'Could not load more events'));
    }
  });
  put(results, h('p', { class: 'loading' }, 'Loading activity…'));
  try {
    await loadPage();
  } catch (err) {
    put(results, errorNotice(err, 'Could not load the activity'));
    more.hidden = true;
  }
}

export async function renderActivityInto(container, { agentId, query, navigate }) {
  put(container, h('h2', {}, 'Activity'));
  await timeline(container, { query, agentId, navigate, base: agentHref(agentId, 'activity') });
}

export async function renderActivity(view, { query, navigate }) {
  put(view, 
    h('div', { class: 'page-header' }, h('h1', { tabindex: '-1' }, 'Activity')),
    h('p', { class: 'lead' }, 'Every event keyledger recorded, across all agents and service tokens.'),
  );
  await timeline(view, { query, navigate, base: '#/activity' });
}
