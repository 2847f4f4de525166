// Agents: the API has no list-agents endpoint, so the list is derived from the audit log's
// agent.registered events (every page of them), filtered here, and each visible agent is
// then read with GET /v1/agents/{id} for what changes (tier, active keys).

import { allPages, api, can, path } from './api.js';
import { add, agentHref, badge, code, errorNotice, h, mapLimit, notice, put, table, time } from './dom.js';

const PAGE_SIZE = 25;

// The registered agents, read once per session and page load (Refresh reads them again).
let registered = null;
// Agents registered in this tab: the list for a token without `audit`.
export const registeredHere = [];

export function forgetAgentList() {
  registered = null;
}

async function loadRegistered() {
  if (!registered) {
    const { items, complete } = await allPages('/v1/audit', { type: 'agent.registered', order: 'desc', limit: 1000 }, 'events');
    registered = {
      complete,
      agents: items.map((e) => ({
        agent_id: e.agent_id,
        name: e.data?.name ?? '',
        environment: e.data?.environment ?? '',
        owner_id: e.data?.owner_id ?? '',
        created_at: e.occurred_at,
      })),
    };
  }
  return registered;
}

function openById(navigate) {
  const input = h('input', { id: 'open-agent-id', name: 'agent_id', placeholder: 'agt_…', autocomplete: 'off', spellcheck: 'false' });
  const error = h('p', { class: 'field-error', id: 'open-agent-error', hidden: true });
  input.setAttribute('aria-describedby', 'open-agent-error');
  const form = h(
    'form',
    { class: 'inline-form', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'open-agent-id' }, 'Agent ID'), input, error),
    h('button', { type: 'submit' }, 'Open agent'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const id = input.value.trim();
    const ok = /^agt_[A-Za-z0-9_-]+$/.test(id);
    error.textContent = ok ? '' : 'An agent ID looks like agt_ followed by letters and digits.';
    error.hidden = ok;
    if (ok) {
      navigate(agentHref(id));
    } else {
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    }
  });
  return form;
}

export async function renderAgents(view, { query, navigate }) {
  const header = h(
    'div',
    { class: 'page-header' },
    h('h1', { tabindex: '-1' }, 'Agents'),
    can('manage') ? h('button', { type: 'button', class: 'primary', onclick: () => navigate('#/agents/new') }, 'Register agent') : null,
  );
  put(view, header);

  if (!can('audit')) {
    add(view, 
      notice('info', 'Listing agents reads the audit log, which needs the audit scope. Open an agent by its ID instead.'),
      openById(navigate),
    );
    if (registeredHere.length) {
      add(view, 
        h('h2', {}, 'Registered in this tab'),
        table({
          columns: [
            { label: 'Name', cell: (a) => h('a', { href: agentHref(a.agent_id) }, a.name), rowHeader: true },
            { label: 'Environment', cell: (a) => badge(a.environment) },
            { label: 'Agent ID', cell: (a) => code(a.agent_id) },
          ],
          rows: registeredHere,
        }),
      );
    }
    return;
  }

  const search = h('input', { id: 'agents-search', type: 'search', value: query.get('q') || '', autocomplete: 'off' });
  const environment = h(
    'select',
    { id: 'agents-env' },
    [
      ['', 'All environments'],
      ['production', 'production'],
      ['staging', 'staging'],
    ].map(([v, l]) => h('option', { value: v, selected: v === (query.get('env') || '') }, l)),
  );
  const owner = h('input', { id: 'agents-owner', value: query.get('owner') || '', list: 'agents-owners', autocomplete: 'off' });
  const owners = h('datalist', { id: 'agents-owners' });
  const refresh = h('button', { type: 'button' }, 'Refresh');
  const filters = h(
    'form',
    { class: 'filters', role: 'search', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'agents-search' }, 'Search by name'), search),
    h('div', { class: 'field' }, h('label', { for: 'agents-env' }, 'Environment'), environment),
    h('div', { class: 'field' }, h('label', { for: 'agents-owner' }, 'Owner'), owner, owners),
    h('div', { class: 'field field-button' }, refresh),
  );
  const results = h('div', { class: 'results', 'aria-live': 'polite' });
  add(view, filters, results, h('details', { class: 'open-by-id' }, h('summary', {}, 'Open an agent by ID'), openById(navigate)));

  let page = Math.max(0, Number(query.get('page') || 1) - 1);
  let generation = 0;

  async function show() {
    const mine = ++generation;
    put(results, h('p', { class: 'loading' }, 'Loading agents…'));
    let all;
    try {
      all = await loadRegistered();
    } catch (err) {
      put(results, errorNotice(err, 'Could not list agents'));
      return;
    }
    if (mine !== generation) {
      return;
    }
    put(owners, ...[...new Set(all.agents.map((a) => a.owner_id).filter(Boolean))].sort().map((o) => h('option', { value: o })));
    const q = search.value.trim().toLowerCase();
    const env = environment.value;
    const who = owner.value.trim();
    const matching = all.agents.filter(
      (a) => (!q || a.name.toLowerCase().includes(q)) && (!env || a.environment === env) && (!who || a.owner_id === who),
    );
    const pages = Math.max(1, Math.ceil(matching.length / PAGE_SIZE));
    page = Math.min(page, pages - 1);
    const visible = matching.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE);
    const details = await mapLimit(visible, 6, async (a) => {
      try {
        return { ...a, ...(await api.get(path`/v1/agents/${a.agent_id}`)) };
      } catch {
        return { ...a, unavailable: true };
      }
    });
    if (mine !== generation) {
      return;
    }
    const prev = h('button', { type: 'button', disabled: page === 0, onclick: () => { page -= 1; show(); } }, 'Previous');
    const next = h('button', { type: 'button', disabled: page >= pages - 1, onclick: () => { page += 1; show(); } }, 'Next');
    put(results, 
      table({
        caption: `${matching.length} agent${matching.length === 1 ? '' : 's'}${matching.length !== all.agents.length ? ` of ${all.agents.length}` : ''}`,
        empty: all.agents.length ? 'No agent matches these filters.' : 'No agents yet. Register the first one.',
        columns: [
          { label: 'Name', cell: (a) => h('a', { href: agentHref(a.agent_id) }, a.name || a.agent_id), rowHeader: true },
          { label: 'Environment', cell: (a) => badge(a.environment) },
          { label: 'Owner', cell: (a) => a.owner_id || h('span', { class: 'muted' }, '—') },
          { label: 'Tier', cell: (a) => a.rate_limit_tier ?? '—' },
          { label: 'Active keys', cell: (a) => (a.active_key_count ?? '—').toString(), class: 'num' },
          { label: 'Created', cell: (a) => time(a.created_at) },
        ],
        rows: details,
      }),
      pages > 1 ? h('div', { class: 'pager' }, prev, h('span', {}, `Page ${page + 1} of ${pages}`), next) : null,
      all.complete ? null : notice('info', 'Only the 50 000 most recent agents are listed; open older ones by ID.'),
    );
  }

  let timer;
  const later = () => {
    clearTimeout(timer);
    page = 0;
    timer = setTimeout(show, 200);
  };
  search.addEventListener('input', later);
  owner.addEventListener('input', later);
  environment.addEventListener('change', later);
  filters.addEventListener('submit', (event) => {
    event.preventDefault();
    show();
  });
  refresh.addEventListener('click', () => {
    forgetAgentList();
    show();
  });
  await show();
}
