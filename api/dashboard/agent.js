// The agent settings panel: profile, rate-limit tier, keys and their lifecycle actions, usage;
// with tabs for the agent's activity and webhook deliveries.

import { api, can, path } from './api.js';
import { renderActivityInto } from './activity.js';
import { renderDeliveriesInto } from './deliveries.js';
import { formDialog, showSecret } from './dialogs.js';
import { add, agentHref, badge, busy, charCount, code, errorNotice, facts, field, h, notice, put, table, time } from './dom.js';
import { usageSection } from './usage.js';

// Suggestions only: a server started with --rate-limit-tiers has its own, and says so (422).
const DEFAULT_TIERS = ['standard', 'elevated'];
const MAX_LIFETIME_DAYS = 3660;
const MAX_OVERLAP_HOURS = 168;
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

function textError(label, value, max) {
  if (CONTROL.test(value)) {
    return `${label} must not contain control characters.`;
  }
  return charCount(value) > max ? `${label} must be at most ${max} characters.` : '';
}

export function profileFacts(agent) {
  return facts([
    ['Agent ID', code(agent.agent_id)],
    ['Description', h('span', { class: 'prewrap' }, agent.description)],
    ['Skills', h('ul', { class: 'chips' }, (agent.skills || []).map((s) => h('li', {}, s)))],
    ['Languages', h('ul', { class: 'chips' }, (agent.languages || []).map((s) => h('li', {}, s)))],
    ['Webhook URL', h('span', { class: 'break' }, agent.webhook_url)],
    ['Environment', badge(agent.environment)],
    ['Owner', agent.owner_id || h('span', { class: 'muted' }, '—')],
    ['Rate-limit tier', agent.rate_limit_tier],
    ['Active keys', agent.active_key_count === undefined ? null : String(agent.active_key_count)],
    ['Created', time(agent.created_at)],
  ]);
}

export function keyStatus(key) {
  return h(
    'span',
    { class: 'status-cell' },
    badge(key.status),
    key.compromised_at ? badge('compromised') : null,
    key.revocation_reason && key.revocation_reason !== 'compromised' ? h('span', { class: 'muted small' }, ` ${key.revocation_reason}`) : null,
  );
}

function secretFacts(key) {
  return [
    ['Key ID', code(key.key_id)],
    ['Hint', code(key.hint)],
    ['Label', key.label || '—'],
    ['Expires', key.expires_at ? time(key.expires_at) : 'never'],
  ];
}

export async function renderAgent(view, { params, query, navigate }) {
  const [agentId, tab] = params;
  const tabs = [
    [undefined, 'Settings'],
    ['activity', 'Activity'],
    ['deliveries', 'Webhook deliveries'],
  ].filter(([t]) => t !== 'activity' || can('audit'));
  const title = h('h1', { tabindex: '-1' }, agentId);
  const envBadge = h('span', {});
  put(view, 
    h('p', { class: 'crumbs' }, h('a', { href: '#/agents' }, 'Agents')),
    h('div', { class: 'page-header' }, h('div', { class: 'title-line' }, title, envBadge)),
    h(
      'nav',
      { class: 'tabs', 'aria-label': 'Agent' },
      h('ul', {}, tabs.map(([t, label]) => h('li', {}, h('a', { href: agentHref(agentId, t), 'aria-current': t === tab ? 'page' : null }, label)))),
    ),
  );
  const content = h('div', { class: 'tab-content' });
  add(view, content);

  let agent;
  try {
    agent = await api.get(path`/v1/agents/${agentId}`);
  } catch (err) {
    put(content, errorNotice(err, err.status === 404 ? 'No such agent' : 'Could not load the agent'));
    return;
  }
  title.textContent = agent.name;
  put(envBadge, badge(agent.environment));
  document.title = `${agent.name} · keyledger`;

  if (tab === 'activity') {
    await renderActivityInto(content, { agentId, query, navigate });
    return;
  }
  if (tab === 'deliveries') {
    await renderDeliveriesInto(content, { agentId });
    return;
  }
  await renderSettings(content, agent);
}

async function renderSettings(content, initialAgent) {
  let agent = initialAgent;
  let keys = [];
  const manage = can('manage');
  const agentId = agent.agent_id;

  const flash = h('div', { class: 'flash', role: 'status', 'aria-live': 'polite' });
  const profileBody = h('div', {});
  const keysBody = h('div', {});
  const tierBody = h('div', {});
  const say = (kind, ...parts) => put(flash, notice(kind, ...parts));

  async function reload() {
    const [a, k] = await Promise.all([api.get(path`/v1/agents/${agentId}`), api.get(path`/v1/agents/${agentId}/keys`)]);
    agent = a;
    keys = k.keys || [];
    draw();
  }

  async function reloadQuietly() {
    try {
      await reload();
    } catch (err) {
      say('error', errorNotice(err, 'Could not refresh the keys'));
    }
  }

  function hintOf(keyId) {
    const k = keys.find((x) => x.key_id === keyId);
    return k ? k.hint : keyId;
  }

  function draw() {
    put(profileBody, profileFacts(agent));
    drawTier();
    drawKeys();
  }

  function drawTier() {
    if (!manage) {
      put(tierBody, h('p', {}, 'Tier: ', h('strong', {}, agent.rate_limit_tier)));
      return;
    }
    const suggestions = h(
      'datalist',
      { id: 'tier-names' },
      [...new Set([agent.rate_limit_tier, ...DEFAULT_TIERS])].map((t) => h('option', { value: t })),
    );
    const tier = field({
      label: 'Rate-limit tier',
      name: 'tier',
      required: true,
      autocomplete: 'off',
      spellcheck: 'false',
      list: 'tier-names',
      value: agent.rate_limit_tier,
      hint: 'A tier this server was started with (--rate-limit-tiers); standard and elevated by default.',
    });
    const change = h('button', { type: 'submit' }, 'Change tier');
    const form = h('form', { class: 'inline-form', novalidate: true, 'aria-label': 'Change tier' }, tier.wrap, suggestions, change);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const wanted = tier.input.value.trim();
      tier.setError(!wanted ? 'Name a rate-limit tier.' : CONTROL.test(wanted) ? 'Rate-limit tier must not contain control characters.' : '');
      if (tier.input.getAttribute('aria-invalid')) {
        tier.input.focus();
        return;
      }
      if (wanted === agent.rate_limit_tier) {
        say('info', `The tier is already ${agent.rate_limit_tier}.`);
        return;
      }
      try {
        agent = await busy(change, () => api.put(path`/v1/agents/${agentId}/rate-limit`, { tier: wanted }));
        say('success', `Rate-limit tier changed to ${agent.rate_limit_tier}.`);
        await reloadQuietly();
      } catch (err) {
        // The server knows its tiers: its `details` ("must be one of: …") go next to the field.
        const details = (err.details || []).filter((d) => d.field === 'tier');
        tier.setError(details.map((d) => d.message).join('; '));
        if (details.length) {
          tier.input.focus();
        }
        say('error', errorNotice(err, 'The tier was not changed'));
      }
    });
    put(tierBody, form);
  }

  function drawKeys() {
    const sorted = [...keys].sort((a, b) => (a.status === 'active') - (b.status === 'active') || a.created_at.localeCompare(b.created_at)).reverse();
    const now = new Date();
    const columns = [
      { label: 'Label', cell: (k) => k.label || h('span', { class: 'muted' }, '—') },
      { label: 'Key', cell: (k) => h('span', {}, code(k.hint), h('br', {}), h('span', { class: 'muted small' }, k.key_id)) },
      { label: 'Status', cell: keyStatus },
      { label: 'Created', cell: (k) => time(k.created_at) },
      { label: 'Expires', cell: (k) => (k.expires_at ? time(k.expires_at, { relativeTo: now }) : h('span', { class: 'muted' }, 'never')) },
      { label: 'Last used', cell: (k) => (k.last_used_at ? time(k.last_used_at, { relativeTo: now }) : h('span', { class: 'muted' }, 'never')) },
      {
        label: 'Rotated',
        cell: (k) =>
          h(
            'span',
            {},
            k.rotated_from ? h('span', { class: 'small' }, 'from ', code(hintOf(k.rotated_from))) : null,
            k.rotated_from && k.rotated_to ? h('br', {}) : null,
            k.rotated_to ? h('span', { class: 'small' }, 'to ', code(hintOf(k.rotated_to))) : null,
            !k.rotated_from && !k.rotated_to ? h('span', { class: 'muted' }, '—') : null,
          ),
      },
    ];
    if (manage) {
      columns.push({ label: 'Actions', cell: actionsFor, class: 'actions-cell' });
    }
    put(keysBody, 
      table({
        caption: `${keys.filter((k) => k.status === 'active').length} active of ${keys.length} keys`,
        empty: manage ? 'No keys yet. Generate the agent\u2019s first key above.' : 'No keys yet.',
        columns,
        rows: sorted,
        rowProps: (k) => ({ 'data-key-id': k.key_id, 'data-hint': k.hint }),
      }),
    );
  }

  function actionsFor(key) {
    const buttons = [];
    if (key.status === 'active') {
      buttons.push(
        h('button', { type: 'button', onclick: () => rotate(key) }, 'Rotate'),
        h('button', { type: 'button', class: 'danger-outline', onclick: () => revoke(key) }, 'Revoke'),
      );
    }
    if (!key.compromised_at) {
      buttons.push(h('button', { type: 'button', class: 'danger-outline', onclick: () => compromise(key) }, 'Report compromised'));
    }
    return h('div', { class: 'row-actions', role: 'group', 'aria-label': `Actions for ${key.hint}` }, buttons);
  }

  // --- Actions -----------------------------------------------------------------------------

  async function showNewKey(title, created, extraFacts = []) {
    if (!created.data?.api_key) {
      say('info', 'The key was created, but this answer was a replay without the secret. Revoke that key and generate another.');
      return;
    }
    const { api_key: secret, key } = created.data;
    created.data.api_key = undefined;
    await showSecret({ title, secret, kind: 'api_key', facts: [...secretFacts(key), ...extraFacts] });
  }

  function generateForm() {
    const label = field({ label: 'Label', name: 'label', optional: true, autocomplete: 'off', placeholder: 'prod-2026-11' });
    const days = field({
      label: 'Expires in (days)',
      name: 'expires_days',
      type: 'number',
      optional: true,
      min: '1',
      max: String(MAX_LIFETIME_DAYS),
      step: '1',
      inputmode: 'numeric',
      hint: 'Empty: never expires.',
    });
    const submit = h('button', { type: 'submit', class: 'primary' }, 'Generate key');
    const form = h('form', { class: 'inline-form generate', novalidate: true, 'aria-label': 'Generate key' }, label.wrap, days.wrap, submit);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const body = {};
      const labelValue = label.input.value.trim();
      label.setError(textError('Label', labelValue, 100));
      const d = days.input.value.trim();
      const n = Number(d);
      days.setError(d && !(Number.isInteger(n) && n >= 1 && n <= MAX_LIFETIME_DAYS) ? `Use a whole number of days from 1 to ${MAX_LIFETIME_DAYS}.` : '');
      if (form.querySelector('[aria-invalid="true"]')) {
        form.querySelector('[aria-invalid="true"]').focus();
        return;
      }
      if (labelValue) {
        body.label = labelValue;
      }
      if (d) {
        body.expires_in_seconds = n * 86400;
      }
      let created;
      try {
        created = await busy(submit, () => api.post(path`/v1/agents/${agentId}/keys`, body));
      } catch (err) {
        for (const dt of err.details || []) {
          (dt.field === 'label' ? label : days).setError(`${dt.field}: ${dt.message}`);
        }
        say('error', errorNotice(err, 'No key was generated'));
        return;
      }
      label.input.value = '';
      days.input.value = '';
      say('success', `Key ${created.data.key.hint} generated.`);
      const refreshed = reloadQuietly();
      await showNewKey('Your new API key', created);
      await refreshed;
      submit.focus();
    });
    return form;
  }

  async function rotate(key) {
    const label = field({ label: 'Label', name: 'label', optional: true, autocomplete: 'off', hint: `For the new key. Empty: keep \u201c${key.label || ''}\u201d.` });
    const hours = h('input', { type: 'number', id: 'overlap-hours', name: 'overlap_hours', min: '1', max: String(MAX_OVERLAP_HOURS), step: '1', value: '24', inputmode: 'numeric', class: 'short' });
    const choice = (value, text, extra, checked) =>
      h('div', { class: 'choice' }, h('input', { type: 'radio', name: 'old_key', id: `old-${value}`, value, checked }), h('label', { for: `old-${value}` }, text), extra);
    const hoursError = h('p', { class: 'field-error', id: 'overlap-hours-error', hidden: true });
    hours.setAttribute('aria-describedby', 'overlap-hours-error');
    const oldKey = h(
      'fieldset',
      {},
      h('legend', {}, `What happens to the old key ${key.hint}?`),
      choice('keep', 'Keep it active until I revoke it (both keys work during the overlap)', null, true),
      choice('expire', 'Expire it after', h('span', {}, ' ', hours, h('label', { for: 'overlap-hours' }, ' hours (1\u2013168)'))),
      choice('revoke', 'Revoke it now', null),
      hoursError,
    );
    hours.addEventListener('focus', () => {
      oldKey.querySelector('#old-expire').checked = true;
    });
    const created = await formDialog({
      title: `Rotate key ${key.hint}`,
      intro: h('p', {}, 'A new key is generated for this agent. Deploy it, check that it works, then retire the old one.'),
      fields: [label.wrap, oldKey],
      onConfirm: async (form) => {
        const body = {};
        const labelValue = label.input.value.trim();
        label.setError(textError('Label', labelValue, 100));
        const mode = form.querySelector('input[name="old_key"]:checked').value;
        const n = Number(hours.value);
        const badHours = mode === 'expire' && !(Number.isInteger(n) && n >= 1 && n <= MAX_OVERLAP_HOURS);
        hoursError.textContent = badHours ? `Use a whole number of hours from 1 to ${MAX_OVERLAP_HOURS}.` : '';
        hoursError.hidden = !badHours;
        if (badHours || label.input.getAttribute('aria-invalid')) {
          return false;
        }
        if (labelValue) {
          body.label = labelValue;
        }
        if (mode === 'expire') {
          body.old_key_expires_in_seconds = n * 3600;
        } else if (mode === 'revoke') {
          body.old_key_expires_in_seconds = 0;
        }
        return api.post(path`/v1/keys/${key.key_id}/rotate`, body);
      },
    });
    if (!created) {
      return;
    }
    const previous = created.data.previous;
    const fate =
      previous.status !== 'active' ? 'revoked now' : previous.expires_at ? `expires ${new Date(previous.expires_at).toLocaleString()}` : 'stays active until you revoke it';
    say('success', `Key ${key.hint} rotated to ${created.data.key.hint}; the old key ${fate}.`);
    const refreshed = reloadQuietly();
    await showNewKey('Your new API key (rotation)', created, [['Old key', h('span', {}, code(previous.hint), ` ${fate}`)]]);
    await refreshed;
  }

  async function revoke(key) {
    const reason = field({ label: 'Reason', name: 'reason', optional: true, autocomplete: 'off', hint: 'At most 200 characters; recorded in the audit log.' });
    const done = await formDialog({
      title: `Revoke key ${key.hint}?`,
      intro: h('p', {}, 'Requests with this key are refused at once, everywhere. This cannot be undone.'),
      fields: [reason.wrap],
      danger: true,
      onConfirm: async () => {
        const value = reason.input.value.trim();
        reason.setError(textError('Reason', value, 200));
        if (reason.input.getAttribute('aria-invalid')) {
          return false;
        }
        return api.post(path`/v1/keys/${key.key_id}/revoke`, value ? { reason: value } : {});
      },
      onFieldErrors: (details) => reason.setError(details.map((d) => d.message).join('; ')),
    });
    if (!done) {
      return;
    }
    say('success', `Key ${key.hint} revoked.`);
    await reloadQuietly();
  }

  async function compromise(key) {
    const note = field({ label: 'Note', name: 'note', type: 'textarea', optional: true, hint: 'What happened (at most 2000 characters).' });
    const source = field({ label: 'Source', name: 'source', optional: true, autocomplete: 'off', hint: 'Where it leaked, e.g. a log, a chat, a repository (at most 200 characters).' });
    const replace = h('input', { type: 'checkbox', id: 'compromise-replace', name: 'replace', checked: key.status === 'active' });
    const done = await formDialog({
      title: `Report key ${key.hint} compromised`,
      intro: h(
        'p',
        {},
        key.status === 'active' ? 'The key is revoked at once and marked compromised.' : 'The key is already inactive; it is marked compromised.',
        ' Afterwards, audit the agent\u2019s recent activity.',
      ),
      fields: [note.wrap, source.wrap, h('div', { class: 'choice' }, replace, h('label', { for: 'compromise-replace' }, 'Generate a replacement key'))],
      danger: true,
      onConfirm: async () => {
        const n = note.input.value.trim();
        const s = source.input.value.trim();
        note.setError(CONTROL.test(n.replace(/[\t\n\r]/g, '')) ? 'Note must not contain control characters.' : charCount(n) > 2000 ? 'Note must be at most 2000 characters.' : '');
        source.setError(textError('Source', s, 200));
        if (note.input.getAttribute('aria-invalid') || source.input.getAttribute('aria-invalid')) {
          return false;
        }
        const body = { replace: replace.checked };
        if (n) {
          body.note = n;
        }
        if (s) {
          body.source = s;
        }
        return api.post(path`/v1/keys/${key.key_id}/compromise`, body);
      },
    });
    if (!done) {
      return;
    }
    const replacement = done.data.replacement;
    say(
      'success',
      `Key ${key.hint} reported compromised${replacement ? `; replacement ${replacement.key.hint} generated` : ''}. `,
      h('a', { href: agentHref(agentId, 'activity') }, 'Audit recent activity'),
    );
    const refreshed = reloadQuietly();
    if (replacement) {
      await showNewKey('Your replacement API key', { data: replacement, replayed: done.replayed });
      done.data.replacement = undefined;
    }
    await refreshed;
  }

  put(content, 
    flash,
    h(
      'div',
      { class: 'grid-2' },
      h('section', { class: 'card', 'aria-labelledby': 'profile-h' }, h('h2', { id: 'profile-h' }, 'Profile'), profileBody),
      h('section', { class: 'card', 'aria-labelledby': 'tier-h' }, h('h2', { id: 'tier-h' }, 'Rate limit'), tierBody),
    ),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'keys-h' },
      h('div', { class: 'section-header' }, h('h2', { id: 'keys-h' }, 'API keys')),
      manage ? generateForm() : null,
      keysBody,
    ),
    can('audit') ? usageSection(path`/v1/agents/${agentId}/usage`) : null,
  );
  try {
    keys = (await api.get(path`/v1/agents/${agentId}/keys`)).keys || [];
    draw();
  } catch (err) {
    put(profileBody, profileFacts(agent));
    drawTier();
    put(keysBody, errorNotice(err, 'Could not load the keys'));
  }
}
