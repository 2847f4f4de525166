// The self view of an agent signed in with its own cg_ key: its profile, the key it signed in
// with, its usage and its webhook deliveries (GET /v1/self, /v1/self/usage,
// /v1/self/webhook-deliveries). Read-only.

import { api, session } from './api.js';
import { profileFacts, keyStatus } from './agent.js';
import { renderDeliveriesInto } from './deliveries.js';
import { add, badge, code, errorNotice, facts, h, notice, put, time } from './dom.js';
import { usageSection } from './usage.js';

export async function renderSelf(view) {
  let self = session.self;
  try {
    self = await api.get('/v1/self');
    session.self = self;
  } catch (err) {
    if (!self) {
      put(view, errorNotice(err, 'Could not load this agent'));
      return;
    }
    add(view, errorNotice(err, 'Showing what was loaded at sign-in'));
  }
  const { agent, key } = self;
  const deliveries = h('section', { class: 'card' });
  put(view, 
    h('div', { class: 'page-header' }, h('div', { class: 'title-line' }, h('h1', { tabindex: '-1' }, agent.name), badge(agent.environment))),
    notice('info', 'Signed in with this agent\u2019s own API key: a read-only view of the agent. Key changes are made by an operator with a service token.'),
    h(
      'div',
      { class: 'grid-2' },
      h('section', { class: 'card', 'aria-labelledby': 'self-profile-h' }, h('h2', { id: 'self-profile-h' }, 'Profile'), profileFacts(agent)),
      h(
        'section',
        { class: 'card', 'aria-labelledby': 'self-key-h' },
        h('h2', { id: 'self-key-h' }, 'This key'),
        facts([
          ['Key', code(key.hint)],
          ['Key ID', code(key.key_id)],
          ['Label', key.label || '—'],
          ['Status', keyStatus(key)],
          ['Created', time(key.created_at)],
          ['Expires', key.expires_at ? time(key.expires_at) : 'never'],
          ['Last used', time(key.last_used_at)],
          ['Rotated from', key.rotated_from ? code(key.rotated_from) : null],
          ['Rotated to', key.rotated_to ? code(key.rotated_to) : null],
        ]),
      ),
    ),
    usageSection('/v1/self/usage'),
    deliveries,
  );
  await renderDeliveriesInto(deliveries, { self: true });
}
