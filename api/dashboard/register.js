// Register agent: the contract's field rules checked here first; the server's 422 `details`
// (authoritative) are shown next to the fields they name.

import { api } from './api.js';
import { forgetAgentList, registeredHere } from './agents.js';
import { showSecret } from './dialogs.js';
import { add, agentHref, busy, charCount, code, errorNotice, field, h, notice, put, select } from './dom.js';

const SINGLE_LINE_CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const MULTI_LINE_CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/;

function splitList(text) {
  return text
    .split(/[,\n]/)
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

function textProblem(value, min, max, multiLine = false) {
  if ((multiLine ? MULTI_LINE_CONTROL : SINGLE_LINE_CONTROL).test(value)) {
    return multiLine ? 'must not contain control characters other than tab and line breaks' : 'must not contain control characters';
  }
  const n = charCount(value);
  if (n < min || n > max) {
    return min === 0 ? `must be at most ${max} characters` : `must be ${min} to ${max} characters (now ${n})`;
  }
  return '';
}

function listProblem(items, maxItems) {
  if (items.length < 1 || items.length > maxItems) {
    return `must hold 1 to ${maxItems} items`;
  }
  const long = items.find((s) => charCount(s) > 64 || SINGLE_LINE_CONTROL.test(s));
  if (long) {
    return `each item must be 1 to 64 characters without control characters ("${long.slice(0, 20)}…" is not)`;
  }
  const seen = new Set();
  const duplicate = items.find((s) => (seen.has(s) ? true : (seen.add(s), false)));
  return duplicate ? `"${duplicate}" is listed twice` : '';
}

function urlProblem(value) {
  if (!value) {
    return 'is required';
  }
  if (value.length > 2048) {
    return 'must be at most 2048 characters';
  }
  if (/[^\x21-\x7e]/.test(value)) {
    return 'must not contain spaces, control or non-ASCII characters';
  }
  let url;
  try {
    url = new URL(value);
  } catch {
    return 'must be an absolute https URL, like https://agent.example.com/hooks';
  }
  if ((url.protocol !== 'https:' && url.protocol !== 'http:') || !url.hostname) {
    return 'must be an absolute https URL with a host';
  }
  return '';
}

const labelOf = (f) => f.wrap.querySelector('label').firstChild.textContent;

export function validateProfile(profile) {
  const problems = {};
  const add = (name, message) => message && (problems[name] = message);
  add('name', textProblem(profile.name, 1, 100));
  add('description', textProblem(profile.description, 20, 2000, true));
  add('skills', listProblem(profile.skills, 50));
  add('languages', listProblem(profile.languages, 20));
  add('webhook_url', urlProblem(profile.webhook_url));
  if (profile.owner_id !== undefined) {
    add('owner_id', textProblem(profile.owner_id, 0, 128));
  }
  return problems;
}

export function renderRegister(view, { navigate }) {
  const name = field({ label: 'Name', name: 'name', required: true, autocomplete: 'off', hint: '1 to 100 characters.' });
  const description = field({
    label: 'Description',
    name: 'description',
    type: 'textarea',
    required: true,
    hint: 'What the agent does: 20 to 2000 characters.',
  });
  const count = h('span', { class: 'counter', 'aria-live': 'polite' });
  add(description.wrap.querySelector('.hint'), ' ', count);
  const skills = field({ label: 'Skills', name: 'skills', required: true, autocomplete: 'off', hint: 'Comma-separated, 1 to 50 distinct items, e.g. pdf, extraction.' });
  const languages = field({ label: 'Languages', name: 'languages', required: true, autocomplete: 'off', hint: 'Comma-separated, 1 to 20 distinct items, e.g. en, de.' });
  const webhook = field({
    label: 'Webhook URL',
    name: 'webhook_url',
    type: 'url',
    required: true,
    autocomplete: 'off',
    placeholder: 'https://agent.example.com/hooks/clawgig',
    hint: 'Absolute https URL that receives the agent\u2019s key events (plain http only if the server allows insecure webhooks).',
  });
  const environment = field({
    label: 'Environment',
    name: 'environment',
    control: select([
      ['production', 'production'],
      ['staging', 'staging'],
    ]),
    hint: 'Register separate agents for staging and production.',
  });
  const owner = field({ label: 'Owner ID', name: 'owner_id', optional: true, autocomplete: 'off', hint: 'At most 128 characters, e.g. usr_123.' });
  const fields = { name, description, skills, languages, webhook_url: webhook, environment, owner_id: owner };

  const updateCount = () => {
    const n = charCount(description.input.value);
    count.textContent = `(${n} / 2000${n < 20 ? `, ${20 - n} more needed` : ''})`;
  };
  description.input.addEventListener('input', updateCount);
  updateCount();

  const submit = h('button', { type: 'submit', class: 'primary' }, 'Register agent');
  const status = h('div', { class: 'form-status' });
  const form = h(
    'form',
    { class: 'card', novalidate: true, 'aria-labelledby': 'register-title' },
    Object.values(fields).map((f) => f.wrap),
    status,
    h('div', { class: 'actions' }, submit, h('a', { href: '#/agents', class: 'button' }, 'Cancel')),
  );

  function showProblems(problems) {
    for (const [key, f] of Object.entries(fields)) {
      f.setError(problems[key] ? `${labelOf(f)} ${problems[key]}.` : '');
    }
    form.querySelector('[aria-invalid="true"]')?.focus();
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    put(status);
    const profile = {
      name: name.input.value.trim(),
      description: description.input.value.trim(),
      skills: splitList(skills.input.value),
      languages: splitList(languages.input.value),
      webhook_url: webhook.input.value.trim(),
      environment: environment.input.value,
    };
    if (owner.input.value.trim()) {
      profile.owner_id = owner.input.value.trim();
    }
    const problems = validateProfile(profile);
    showProblems(problems);
    if (Object.keys(problems).length) {
      return;
    }
    let created;
    try {
      created = await busy(submit, () => api.post('/v1/agents', profile));
    } catch (err) {
      if (err.details.length) {
        const fromServer = {};
        const unplaced = [];
        for (const d of err.details) {
          const key = String(d.field || '').split(/[[.]/)[0];
          const message = d.field === key ? d.message : `${d.field} ${d.message}`;
          if (fields[key]) {
            fromServer[key] = fromServer[key] ? `${fromServer[key]}; ${message}` : message;
          } else {
            unplaced.push(`${d.field}: ${d.message}`);
          }
        }
        for (const [key, f] of Object.entries(fields)) {
          f.setError(fromServer[key] ? `${labelOf(f)}: ${fromServer[key]}.` : '');
        }
        put(status, errorNotice(err), ...unplaced.map((u) => notice('error', u)));
        form.querySelector('[aria-invalid="true"]')?.focus();
      } else {
        put(status, errorNotice(err, 'The agent was not registered'));
      }
      return;
    }
    const agent = created.data;
    forgetAgentList();
    registeredHere.push({ agent_id: agent.agent_id, name: agent.name, environment: agent.environment });
    if (agent.webhook_secret) {
      await showSecret({
        title: `Agent \u201c${agent.name}\u201d registered: its webhook signing secret`,
        secret: agent.webhook_secret,
        kind: 'webhook_secret',
        facts: [['Agent ID', code(agent.agent_id)]],
      });
      agent.webhook_secret = undefined;
    } else if (created.replayed) {
      add(status, notice('info', 'This registration was already done; its webhook secret is not shown again.'));
    }
    navigate(agentHref(agent.agent_id));
  });

  put(view, 
    h('div', { class: 'page-header' }, h('h1', { tabindex: '-1', id: 'register-title' }, 'Register agent')),
    h('p', { class: 'lead' }, 'Create the agent\u2019s profile, then generate its API key from the agent settings panel.'),
    form,
  );
  name.input.focus();
}
