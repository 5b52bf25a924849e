// ringside console pages: what the VNC, terminal and expired pages share —
// branding and texts (settings arrive as data-* attributes on <body>, put
// there by ringside: no inline script, the CSP stays strict), the postMessage
// API for a panel that frames the page, the resume secret and the reconnect
// policy.

const ds = document.body.dataset;

export const settings = {
  lang: ds.lang === 'de' ? 'de' : 'en',
  title: ds.title || '',
  logo: ds.logo || '',
  accent: /^#[0-9a-fA-F]{6}$/.test(ds.accent || '') ? ds.accent : '',
  support: /^https?:\/\//.test(ds.support || '') ? ds.support : '',
  // console.frame_ancestors: the only origins messages go to or come from.
  origins: (ds.origins || '').split(' ').filter(Boolean),
};

const TEXTS = {
  en: {
    console: 'Console',
    terminal: 'Terminal',
    'state.connecting': 'Connecting…',
    'state.connected': 'Connected',
    'state.reconnecting': 'Reconnecting…',
    'state.disconnected': 'Disconnected',
    'state.failed': 'Failed',
    'connecting.console': 'Connecting to the console…',
    'connecting.terminal': 'Connecting to the terminal…',
    'connecting.text': 'This takes a moment.',
    'reconnecting.title': 'Reconnecting…',
    'reconnecting.text': 'The connection was interrupted. Trying again…',
    'expired.title': 'This console link has expired or was already used',
    'expired.text1': 'Console links work once and only for a short time, so nobody else can reuse them.',
    'expired.text2': 'Go back to your control panel and open the console again to get a fresh link.',
    'failed.console': 'The console could not be opened',
    'failed.terminal': 'The terminal could not be opened',
    'failed.text': 'The console failed.',
    'failed.start': 'Could not start the console',
    'disconnected.console': 'The console was disconnected',
    'disconnected.terminal': 'The terminal was disconnected',
    'ended.text': 'The session ended.',
    'lost.text': 'The connection was lost.',
    'replaced.text': 'The console was opened in another window.',
    'button.retry': 'Try again',
    'button.cad': 'Ctrl-Alt-Del',
    'button.cad.title': 'Send Ctrl-Alt-Del',
    'button.fullscreen': 'Full screen',
    'button.show': 'Show',
    'button.show.title': 'Show or hide the text',
    'button.type': 'Type',
    'type.placeholder': 'Type text into the console',
    'fit': 'Fit',
    'fit.title': 'Scale the screen to the window',
    'support': 'Contact support',
  },
  de: {
    console: 'Konsole',
    terminal: 'Terminal',
    'state.connecting': 'Verbinde…',
    'state.connected': 'Verbunden',
    'state.reconnecting': 'Verbinde erneut…',
    'state.disconnected': 'Getrennt',
    'state.failed': 'Fehlgeschlagen',
    'connecting.console': 'Verbindung zur Konsole wird hergestellt…',
    'connecting.terminal': 'Verbindung zum Terminal wird hergestellt…',
    'connecting.text': 'Das dauert einen Moment.',
    'reconnecting.title': 'Verbinde erneut…',
    'reconnecting.text': 'Die Verbindung wurde unterbrochen. Neuer Versuch…',
    'expired.title': 'Dieser Konsolen-Link ist abgelaufen oder wurde bereits benutzt',
    'expired.text1': 'Konsolen-Links gelten nur einmal und nur kurz, damit niemand sonst sie verwenden kann.',
    'expired.text2': 'Öffnen Sie die Konsole erneut in Ihrem Kundenbereich, um einen neuen Link zu erhalten.',
    'failed.console': 'Die Konsole konnte nicht geöffnet werden',
    'failed.terminal': 'Das Terminal konnte nicht geöffnet werden',
    'failed.text': 'Die Konsole ist fehlgeschlagen.',
    'failed.start': 'Die Konsole konnte nicht gestartet werden',
    'disconnected.console': 'Die Verbindung zur Konsole wurde getrennt',
    'disconnected.terminal': 'Die Verbindung zum Terminal wurde getrennt',
    'ended.text': 'Die Sitzung wurde beendet.',
    'lost.text': 'Die Verbindung ist abgebrochen.',
    'replaced.text': 'Die Konsole wurde in einem anderen Fenster geöffnet.',
    'button.retry': 'Erneut versuchen',
    'button.cad': 'Strg-Alt-Entf',
    'button.cad.title': 'Strg-Alt-Entf senden',
    'button.fullscreen': 'Vollbild',
    'button.show': 'Zeigen',
    'button.show.title': 'Text zeigen oder verbergen',
    'button.type': 'Tippen',
    'type.placeholder': 'Text in die Konsole tippen',
    'fit': 'Anpassen',
    'fit.title': 'Bild an das Fenster anpassen',
    'support': 'Support kontaktieren',
  },
};

export function t(key) {
  return TEXTS[settings.lang][key] ?? TEXTS.en[key] ?? key;
}

// Texts, title, logo and accent colour; elements name their text with
// data-i18n (textContent), data-i18n-title and data-i18n-placeholder.
export function applyBranding(kindKey) {
  document.documentElement.lang = settings.lang;
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll('[data-i18n-title]')) el.title = t(el.dataset.i18nTitle);
  for (const el of document.querySelectorAll('[data-i18n-placeholder]')) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
    el.setAttribute('aria-label', el.placeholder);
  }
  if (settings.accent) document.documentElement.style.setProperty('--accent', settings.accent);
  if (kindKey) document.title = settings.title || t(kindKey);
  const brand = document.getElementById('brand');
  if (brand) {
    if (settings.logo) {
      const img = document.createElement('img');
      img.src = settings.logo;
      img.alt = '';
      brand.append(img);
    }
    if (settings.title) {
      const span = document.createElement('span');
      span.textContent = settings.title;
      brand.append(span);
    }
    brand.hidden = !settings.logo && !settings.title;
  }
}

// A "Contact support" link inside <card> while it shows an error.
export function showSupport(card, on) {
  let a = card.querySelector('a.support');
  if (!settings.support) return;
  if (!a) {
    a = document.createElement('a');
    a.className = 'support';
    a.href = settings.support;
    a.target = '_blank';
    a.rel = 'noopener noreferrer';
    a.textContent = t('support');
    card.append(a);
  }
  a.hidden = !on;
}

// --- postMessage API (README "Embedding") ---

const framed = window.parent !== window;

// To the parent, once per allowed origin: the browser delivers it only where
// the parent's origin matches, so no other site ever reads the state. Never '*'.
export function postState(state, cause, message) {
  if (!framed) return;
  const msg = { type: 'ringside.state', state };
  if (cause) msg.cause = cause;
  if (message) msg.message = message;
  for (const o of settings.origins) {
    try { window.parent.postMessage(msg, o); } catch { /* malformed origin: skip */ }
  }
}

// Commands from the parent: only from the window that frames us and only from
// an allowed origin; anything else is ignored without an answer.
// handler(msg) returns nothing or throws/rejects with the reason.
export function onCommand(handler) {
  window.addEventListener('message', async (e) => {
    if (!framed || e.source !== window.parent || !settings.origins.includes(e.origin)) return;
    const m = e.data;
    if (!m || typeof m !== 'object' || m.type !== 'ringside.command' || typeof m.command !== 'string') return;
    const reply = { type: 'ringside.result', command: m.command, ok: true };
    if (m.id !== undefined) reply.id = m.id;
    try {
      await handler(m);
    } catch (err) {
      reply.ok = false;
      reply.error = String((err && err.message) || err);
    }
    e.source.postMessage(reply, e.origin);
  });
}

export function toggleFullscreen() {
  if (document.fullscreenElement) return document.exitFullscreen();
  return document.documentElement.requestFullscreen();
}

// --- resume secret: 32 random bytes per console link, kept in this tab ---

function b64url(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

const memSecrets = {};

// sessionStorage works in a cross-site iframe (unlike third-party cookies),
// survives a reload of this tab and is not shared with other tabs or browsers.
export function resumeSecret(token) {
  const key = `rs-resume:${token}`;
  let secret = null;
  try { secret = sessionStorage.getItem(key); } catch { /* storage disabled */ }
  if (!secret || !/^[A-Za-z0-9_-]{43}$/.test(secret)) {
    secret = memSecrets[key] || b64url(crypto.getRandomValues(new Uint8Array(32)));
    memSecrets[key] = secret;
    try { sessionStorage.setItem(key, secret); } catch { /* kept in memory only */ }
  }
  return secret;
}

export function linkToken() {
  return decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() || '');
}

export function wsUrl(token) {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.host}/ws/${encodeURIComponent(token)}?resume=${resumeSecret(token)}`;
}

// --- what a WebSocket close means (the resume contract) ---
// 'replaced': 4001, another window took the console over: stay down.
// 'ended': 1000, the console ended normally: stay down.
// 'retry': an abnormal drop (1006: network, sleep), 1001 going away, 1012
//   restart: reconnect while the server's resume grace can still hold.
// 'failed': anything else with a code (1008, 1011, 4xxx): show the reason.
export function closeKind(code) {
  if (code === 4001) return 'replaced';
  if (code === 1000 || code === 1005) return 'ended';
  if (code === 1006 || code === 1001 || code === 1012) return 'retry';
  return 'failed';
}

// Back-off for reconnects: 0.5 s, 1 s, 2 s, 4 s, then every 8 s, giving up
// once the next try would start more than 30 s after the drop (the server's
// default console.resume_grace_s: later tries cannot succeed).
export class Backoff {
  constructor(limitMs = 30000, clock = Date.now) { this.limitMs = limitMs; this.clock = clock; this.reset(); }
  reset() { this.attempt = 0; this.since = 0; }
  // Delay before the next try, or -1 when it is time to give up.
  next() {
    const now = this.clock();
    if (!this.attempt) this.since = now;
    const delay = Math.min(500 * 2 ** this.attempt, 8000);
    this.attempt++;
    return now + delay - this.since > this.limitMs ? -1 : delay;
  }
}

// After a try that never opened: is ringside reachable at all? Reachable
// means the link was refused (used or expired); unreachable means the
// network is still down and trying again makes sense.
export async function serverReachable() {
  try {
    await fetch('/healthz', { cache: 'no-store' });
    return true;
  } catch {
    return false;
  }
}
