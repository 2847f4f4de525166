// keyledger dashboard: hash routing, the page frame, sign-in state.
// Plain ES modules, no framework: every page is a function that fills a <div>.

import { can, resume, restoreSession, session, signOut, whenSignedOut } from './api.js';
import { add, errorNotice, h, put } from './dom.js';
import { renderActivity } from './activity.js';
import { renderAgent } from './agent.js';
import { renderAgents } from './agents.js';
import { renderRegister } from './register.js';
import { renderRotation } from './rotation.js';
import { renderSelf } from './self.js';
import { renderSignIn } from './signin.js';
import { renderTokens } from './tokens.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');

// [pattern, page, title, needs(session) → bool]
const ROUTES = [
  [/^\/agents$/, renderAgents, 'Agents', () => session.kind === 'service'],
  [/^\/agents\/new$/, renderRegister, 'Register agent', () => can('manage')],
  [/^\/agents\/(agt_[A-Za-z0-9_-]+)(?:\/(activity|deliveries))?$/, renderAgent, 'Agent', () => session.kind === 'service'],
  [/^\/activity$/, renderActivity, 'Activity', () => can('audit')],
  [/^\/rotation$/, renderRotation, 'Rotation due', () => can('manage') || can('audit')],
  [/^\/tokens$/, renderTokens, 'Service tokens', () => can('admin')],
  [/^\/self$/, renderSelf, 'My agent', () => session.kind === 'agent'],
];

function homeRoute() {
  return session.kind === 'agent' ? '#/self' : '#/agents';
}

function renderNav() {
  const current = location.hash.split('?')[0];
  const links =
    session.kind === 'agent'
      ? [['#/self', 'My agent']]
      : [
          ['#/agents', 'Agents', true],
          ['#/activity', 'Activity', can('audit')],
          ['#/rotation', 'Rotation due', can('manage') || can('audit')],
          ['#/tokens', 'Service tokens', can('admin')],
        ].filter(([, , shown]) => shown);
  put(nav, 
    ...(session.token
      ? [
          h(
            'ul',
            {},
            links.map(([href, label]) =>
              h(
                'li',
                {},
                h('a', { href, 'aria-current': current === href || current.startsWith(`${href}/`) ? 'page' : null }, label),
              ),
            ),
          ),
        ]
      : []),
  );
  if (!session.token) {
    put(who);
    return;
  }
  const identity =
    session.kind === 'agent'
      ? `Agent key ${session.self?.key?.hint ?? ''}`
      : `${session.tokenInfo?.name ?? 'Service token'}${session.actor ? ` · ${session.actor}` : ''}`;
  const scopes = session.kind === 'agent' ? 'self view' : [...session.scopes].join(', ') || 'no dashboard scope';
  const signOutButton = h('button', { type: 'button', class: 'link-button', onclick: () => signOut() }, 'Sign out');
  put(who, 
    h('span', { class: 'identity' }, identity, h('span', { class: 'scopes' }, ` (${scopes})`)),
    !can('manage') && session.kind === 'service' ? h('span', { class: 'badge badge-readonly' }, 'read-only') : null,
    signOutButton,
  );
}

let signOutReason = null;

async function route() {
  renderNav();
  const view = h('div', { class: 'view' });
  put(main, view);
  if (!session.token) {
    document.title = 'Sign in · keyledger';
    renderSignIn(view, {
      reason: signOutReason,
      onSignedIn: () => {
        signOutReason = null;
        const wanted = location.hash;
        if (!wanted || wanted === '#/' || wanted === '#/signin' || !match(wanted.slice(1))) {
          location.hash = homeRoute();
        } else {
          route();
        }
      },
    });
    return;
  }
  const hash = location.hash.slice(1) || '';
  const found = match(hash);
  if (!found) {
    location.replace(homeRoute());
    return;
  }
  const [page, title, params, query] = found;
  document.title = `${title} · keyledger`;
  try {
    await page(view, { params, query, navigate: (to) => (location.hash = to), refreshNav: renderNav });
  } catch (err) {
    if (session.token) {
      add(view, errorNotice(err, `Could not show ${title}`));
    }
  }
}

function match(hash) {
  const [pathPart, queryPart] = hash.split('?');
  for (const [pattern, page, title, allowed] of ROUTES) {
    const m = pattern.exec(pathPart);
    if (m && allowed()) {
      return [page, title, m.slice(1), new URLSearchParams(queryPart || '')];
    }
  }
  return null;
}

whenSignedOut((reason) => {
  signOutReason = reason || null;
  // A dialog still open (a secret, a confirmation) closes with the session; closing forgets a secret.
  for (const dialog of document.querySelectorAll('dialog')) {
    dialog.close();
  }
  if (location.hash && location.hash !== '#/signin') {
    history.replaceState(null, '', '#/signin');
  }
  route();
});

window.addEventListener('hashchange', () => route());

async function start() {
  if (restoreSession()) {
    put(main, h('p', { class: 'loading' }, 'Loading…'));
    try {
      if (!(await resume())) {
        return;
      }
    } catch (err) {
      // Not a refusal of the credential (a restart, a rate limit, the network): try again, or
      // leave with the credential forgotten.
      put(
        main,
        errorNotice(err, 'Could not reach keyledger'),
        h('p', {},
          h('button', { type: 'button', onclick: () => start() }, 'Try again'), ' ',
          h('button', { type: 'button', class: 'link-button', onclick: () => signOut() }, 'Sign out')),
      );
      return;
    }
  }
  route();
}

start();
