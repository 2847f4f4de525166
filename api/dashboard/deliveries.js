// Webhook deliveries: every attempt keyledger recorded for an agent's events, and a retry for
// an event whose delivery failed (POST …/webhook-deliveries/{event_id}/retry, scope manage).

import { api, can, path } from './api.js';
import { badge, busy, code, errorNotice, h, notice, put, table, time } from './dom.js';

export async function renderDeliveriesInto(container, { agentId, self = false }) {
  const source = self ? '/v1/self/webhook-deliveries' : path`/v1/agents/${agentId}/webhook-deliveries`;
  const deliveries = [];
  let cursor;
  const flash = h('div', { class: 'flash', role: 'status', 'aria-live': 'polite' });
  const summary = h('p', { class: 'muted' });
  const results = h('div', { class: 'results' });
  const more = h('button', { type: 'button', hidden: true }, 'Load more');
  const refresh = h('button', { type: 'button' }, 'Refresh');
  put(container, 
    h('div', { class: 'section-header' }, h('h2', {}, 'Webhook deliveries'), refresh),
    h('p', { class: 'lead' }, 'Each attempt to POST a key event to the agent\u2019s webhook URL, newest first. Unexpected failures can mean a misconfigured endpoint or key misuse.'),
    flash,
    summary,
    results,
    h('div', { class: 'pager' }, more),
  );

  // The latest attempt per event decides whether it can be retried.
  function latestAttempts() {
    const latest = new Map();
    for (const d of deliveries) {
      const seen = latest.get(d.event_id);
      if (!seen || d.position > seen.position) {
        latest.set(d.event_id, d);
      }
    }
    return latest;
  }

  async function retry(delivery, button) {
    try {
      const { data } = await busy(button, () => api.post(path`/v1/agents/${agentId}/webhook-deliveries/${delivery.event_id}/retry`, {}));
      put(flash, notice('success', `Delivery of ${delivery.event_type || 'event'} ${delivery.event_id} ${data?.status || 'queued'} for another attempt. Refresh to see it.`));
      button.disabled = true;
    } catch (err) {
      put(flash, errorNotice(err, 'The delivery was not retried'));
    }
  }

  function draw() {
    const latest = latestAttempts();
    const counts = { delivered: 0, retrying: 0, failed: 0 };
    for (const d of latest.values()) {
      counts[d.outcome] = (counts[d.outcome] || 0) + 1;
    }
    summary.textContent = `${deliveries.length} attempts for ${latest.size} events: ${counts.delivered} delivered, ${counts.retrying} retrying, ${counts.failed} failed.`;
    const columns = [
      { label: 'Recorded', cell: (d) => time(d.recorded_at, { seconds: true }) },
      { label: 'Event', cell: (d) => h('span', {}, d.event_type || '', h('br', {}), h('span', { class: 'muted small' }, d.event_id)) },
      { label: 'Attempt', cell: (d) => String(d.attempt ?? ''), class: 'num' },
      { label: 'Outcome', cell: (d) => badge(d.outcome) },
      { label: 'Status or error', cell: (d) => (d.status_code ? code(String(d.status_code)) : h('span', { class: 'error-text' }, d.error || '—')) },
      { label: 'Duration', cell: (d) => `${d.duration_ms ?? 0} ms`, class: 'num' },
    ];
    if (!self && can('manage')) {
      columns.push({
        label: 'Actions',
        cell: (d) => {
          if (d.outcome !== 'failed' || latest.get(d.event_id) !== d) {
            return '';
          }
          const button = h('button', { type: 'button' }, 'Retry');
          button.addEventListener('click', () => retry(d, button));
          return button;
        },
      });
    }
    put(results, 
      table({
        caption: 'Delivery attempts',
        empty: 'No deliveries recorded yet.',
        columns,
        rows: deliveries,
        rowProps: (d) => ({ 'data-outcome': d.outcome }),
      }),
    );
    more.hidden = !cursor;
  }

  async function loadPage() {
    const data = await api.get(source, { limit: 100, cursor });
    deliveries.push(...(data.deliveries || []));
    deliveries.sort((a, b) => b.position - a.position);
    cursor = data.next_cursor;
    draw();
  }

  async function reloadAll() {
    deliveries.length = 0;
    cursor = undefined;
    put(results, h('p', { class: 'loading' }, 'Loading deliveries…'));
    try {
      await loadPage();
    } catch (err) {
      put(results, errorNotice(err, 'Could not load the deliveries'));
    }
  }

  more.addEventListener('click', async () => {
    try {
      await busy(more, loadPage);
    } catch (err) {
      put(flash, errorNotice(err, 'Could not load more deliveries'));
    }
  });
  refresh.addEventListener('click', () => busy(refresh, reloadAll));
  await reloadAll();
}
